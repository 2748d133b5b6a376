"""`/docs` in a real browser (Debian's chromium, headless, driven by Selenium through chromedriver): Swagger UI
renders the gateway's OpenAPI 3.1 document, under its Content-Security-Policy, loading nothing from
elsewhere. A screenshot is written to .artifacts/ui/."""

from __future__ import annotations

from iir_dev.stack import REPO, Stack
from tests.browser import chromium

ARTIFACTS = REPO / ".artifacts" / "ui"
# What Swagger UI shows instead of the operations when it cannot read the document (as Swagger UI 4 does
# with OpenAPI 3.1), or cannot load it.
BROKEN = (".version-pragma", ".errors-wrapper", ".loading-container .errors")


def test_docs_render_the_openapi_31_document_offline(stack: Stack) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with chromium() as d:
        d.get(f"{stack.gateway_url}/docs")

        def rendered_or_broken(_: object) -> bool:
            return bool(d.find_elements(By.CSS_SELECTOR, ", ".join((".opblock", *BROKEN))))

        WebDriverWait(d, 30).until(rendered_or_broken)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        d.save_screenshot(str(ARTIFACTS / "docs.png"))
        shown = d.find_element(By.TAG_NAME, "body").text
        assert "Unable to render this definition" not in shown, shown[:2000]
        assert "does not specify a valid version field" not in shown, shown[:2000]
        assert "Failed to load API definition" not in shown, shown[:2000]
        assert not d.find_elements(By.CSS_SELECTOR, ", ".join(BROKEN)), shown[:2000]

        paths = {e.get_attribute("data-path") for e in d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
        assert {"/v1/chat/completions", "/api/v1/apikeys"} <= paths, paths
        assert "OAS 3.1" in d.find_element(By.CSS_SELECTOR, ".info .version-stamp").text
        assert d.find_elements(By.CSS_SELECTOR, ".auth-wrapper .authorize"), "no Authorize button"

        # Every file the page loaded came from the gateway, and nothing was refused by its policy.
        loaded = d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert loaded and all(url.startswith(f"{stack.gateway_url}/") for url in loaded), loaded
        logged = d.get_log("browser")
        assert not [e for e in logged if e["level"] == "SEVERE"], logged
