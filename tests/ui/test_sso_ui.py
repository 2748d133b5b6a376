"""The admin UI in Chromium signing in through single sign-on (the local OpenID Connect provider of
tests/fakes/oidc_provider.py), its pages following the role, and a plain key's own view."""

from __future__ import annotations

import uuid

import httpx
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as seen
from selenium.webdriver.support.ui import WebDriverWait

from iir_dev.stack import Stack
from tests.browser import chromium
from tests.conftest import SERVED
from tests.fakes.oidc_provider import Provider
from tests.integration.test_single_sign_on import sso  # noqa: F401  (the fixture)
from tests.ui.test_admin_ui import ARTIFACTS
from tests.waiting import wait_for


def test_signing_in_with_sso_then_with_a_plain_key(stack: Stack, sso: tuple[str, Provider]) -> None:  # noqa: F811
    gateway, provider = sso
    person = {"sub": uuid.uuid4().hex, "email": "vera@example.com", "groups": ["iir-viewers"]}
    httpx.post(f"{provider.issuer}/_person", json=person)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with chromium() as d:
        wait = WebDriverWait(d, 20)
        d.get(f"{gateway}/ui/")
        wait.until(seen.visibility_of_element_located((By.ID, "sso-button"))).click()
        # To the provider and back: signed in as a viewer, the session out of the address bar.
        wait.until(seen.text_to_be_present_in_element((By.ID, "who"), "vera@example.com · viewer (read only)"))
        wait.until(seen.visibility_of_element_located((By.ID, "keys-table")))
        assert "#" not in d.current_url and "session" not in d.current_url
        d.save_screenshot(str(ARTIFACTS / "8-sso-viewer.png"))
        # A viewer's change is refused by the API, and the UI says why.
        d.find_element(By.ID, "key-name").send_keys("viewer-key")
        d.find_element(By.ID, "key-create").click()
        wait.until(seen.text_to_be_present_in_element((By.ID, "error"), "changes nothing"))
        token = d.execute_script("return sessionStorage.getItem('iir-admin-key')")
        d.find_element(By.ID, "logout").click()
        assert d.execute_script("return sessionStorage.length") == 0
        wait_for(  # signing out ends the session on the gateway too
            lambda: (
                httpx.get(f"{gateway}/api/v1/apikeys", headers={"Authorization": f"Bearer {token}"}).status_code == 401
            ),
            timeout=15,
            what="the session to end",
        )

        # A plain key sees its own usage and requests, nothing else.
        key = stack.create_key("ui-plain")
        body = {"model": f"local/{SERVED}", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        httpx.post(f"{gateway}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=body)
        d.find_element(By.ID, "admin-key").send_keys(key)
        d.find_element(By.ID, "login-button").click()
        wait.until(seen.visibility_of_element_located((By.ID, "me-spend")))
        visible = [b.text for b in d.find_elements(By.CSS_SELECTOR, "nav button[data-view]") if b.is_displayed()]
        assert visible == ["My usage"]
        d.save_screenshot(str(ARTIFACTS / "9-plain-key.png"))
