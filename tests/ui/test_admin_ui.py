"""The admin UI in a real browser (Debian's chromium, headless, driven by Selenium through chromedriver):
log in, create a team and a key in it, make a request with that key, and see its spend. Screenshots of
each page are written to .artifacts/ui/."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import httpx
import pytest

from iir_dev.stack import REPO, Stack
from tests.browser import chromium
from tests.conftest import MASTER_KEY, SERVED

if TYPE_CHECKING:
    from selenium.webdriver import Chrome
    from selenium.webdriver.remote.webelement import WebElement

ARTIFACTS = REPO / ".artifacts" / "ui"


@pytest.fixture
def browser() -> Iterator[Chrome]:
    with chromium() as driver:
        yield driver


def test_create_a_team_and_key_then_see_its_spend(stack: Stack, browser: Chrome) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    d = browser
    wait = WebDriverWait(d, 15)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def shot(name: str) -> None:
        d.save_screenshot(str(ARTIFACTS / f"{name}.png"))

    def by_id(element_id: str) -> WebElement:
        return wait.until(seen.visibility_of_element_located((By.ID, element_id)))

    d.get(f"{stack.gateway_url}/ui/")
    by_id("admin-key").send_keys("not-a-key")
    by_id("login-button").click()
    assert "Incorrect API key" in by_id("error").text
    key_input = by_id("admin-key")
    key_input.clear()
    key_input.send_keys(MASTER_KEY)
    by_id("login-button").click()
    by_id("keys-table")
    shot("1-keys")

    team = f"ui-team-{uuid.uuid4().hex[:6]}"
    d.find_element(By.CSS_SELECTOR, "nav button[data-view=teams]").click()
    by_id("team-name").send_keys(team)
    by_id("team-budget").send_keys("25")
    by_id("team-create").click()
    wait.until(seen.text_to_be_present_in_element((By.ID, "teams-table"), team))
    shot("2-teams")
    # Edit it: its row's Edit opens a form with its settings.
    row = next(r for r in d.find_elements(By.CSS_SELECTOR, "#teams-table tbody tr") if team in r.text)
    row.find_element(By.XPATH, ".//button[text()='Edit']").click()
    team_rpm = by_id("team-edit-rpm")
    team_rpm.clear()
    team_rpm.send_keys("777")
    by_id("team-edit-alerts").send_keys("50, 80, 100")  # budget alerts at these shares of its budget
    by_id("team-edit-save").click()
    wait.until(seen.text_to_be_present_in_element((By.ID, "teams-table"), "777"))
    assert "50% 80% 100%" in by_id("teams-table").text

    d.find_element(By.CSS_SELECTOR, "nav button[data-view=keys]").click()
    by_id("key-name").send_keys("ui-key")
    by_id("key-models").send_keys(f"local/{SERVED}, local/qwen*")
    by_id("key-expiry").send_keys("30")
    Select(by_id("key-team")).select_by_visible_text(team)
    by_id("key-create").click()
    secret = by_id("new-secret").text
    assert secret.startswith("iir-")
    wait.until(seen.text_to_be_present_in_element((By.ID, "keys-table"), team))
    assert "local/qwen*" in by_id("keys-table").text  # its allowed models, and its expiry date
    shot("3-key-created")
    # Edit it: a limit set in the form is the key's at once.
    row = next(r for r in d.find_elements(By.CSS_SELECTOR, "#keys-table tbody tr") if team in r.text)
    row.find_element(By.XPATH, ".//button[text()='Edit']").click()
    rpm = by_id("edit-rpm")
    rpm.clear()
    rpm.send_keys("600")
    by_id("edit-save").click()
    wait.until(seen.text_to_be_present_in_element((By.ID, "keys-table"), "600"))

    for _ in range(2):
        resp = httpx.post(
            f"{stack.gateway_url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {secret}"},
            json={"model": f"local/{SERVED}", "messages": [{"role": "user", "content": "hello from the UI"}]},
            timeout=20,
        )
        assert resp.status_code == 200, resp.text

    def team_spend(_: Chrome) -> str | None:
        """The team's row once its spend is recorded (the page re-rendered at each try)."""
        d.find_element(By.CSS_SELECTOR, "nav button[data-view=spend]").click()
        wait.until(seen.visibility_of_element_located((By.ID, "spend-table")))
        rows = [r.text for r in d.find_elements(By.CSS_SELECTOR, "#spend-table tbody tr")]
        return next((r for r in rows if team in r and " 2 " in f" {r} "), None)

    polling = WebDriverWait(d, 15, poll_frequency=0.5, ignored_exceptions=(StaleElementReferenceException,))
    spend_row = polling.until(team_spend)
    assert spend_row is not None and "$0.0" in spend_row  # a cost in dollars, above zero, for its 2 requests
    assert wait.until(seen.visibility_of_element_located((By.CSS_SELECTOR, "#spend-chart rect")))
    shot("4-spend")
    # A group's requests one by one: its row opens the request log filtered to it.
    next(r for r in d.find_elements(By.CSS_SELECTOR, "#spend-table tbody tr") if team in r.text).click()
    polling.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, "#logs-table tbody tr")) == 2)

    d.find_element(By.CSS_SELECTOR, "nav button[data-view=models]").click()
    wait.until(seen.text_to_be_present_in_element((By.ID, "models-table"), f"local/{SERVED}"))
    shot("5-models")
    d.find_element(By.CSS_SELECTOR, "nav button[data-view=batches]").click()
    by_id("jobs-table")
    d.find_element(By.CSS_SELECTOR, "nav button[data-view=audit]").click()
    wait.until(seen.text_to_be_present_in_element((By.ID, "audit-table"), "team.create"))
    assert f"team {team}" in by_id("audit-table").text  # names, not ids
    shot("6-audit")

    # The request log: the key's two requests; a row opens its details; errors only shows none.
    d.find_element(By.CSS_SELECTOR, "nav button[data-view=logs]").click()
    Select(by_id("logs-key")).select_by_visible_text(
        next(o.text for o in Select(by_id("logs-key")).options if o.text.startswith("ui-key"))
    )
    shown = by_id("logs-table")
    by_id("logs-apply").click()
    wait.until(seen.staleness_of(shown))  # the page drawn again for the chosen key
    wait.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, "#logs-table tbody tr")) == 2)
    assert "local/" in by_id("logs-table").text and "200" in by_id("logs-table").text
    d.find_element(By.CSS_SELECTOR, "#logs-table tbody tr").click()
    wait.until(seen.text_to_be_present_in_element((By.ID, "log-fields"), "request_id"))
    shot("7-logs")
    by_id("logs-errors").click()
    shown = by_id("logs-table")
    by_id("logs-apply").click()
    wait.until(seen.staleness_of(shown))
    wait.until(seen.text_to_be_present_in_element((By.ID, "logs-table"), "No requests logged yet."))

    # A destructive action asks first: dismissed, the key stays; accepted, it is revoked.
    d.find_element(By.CSS_SELECTOR, "nav button[data-view=keys]").click()

    def revoke_button(_: Chrome) -> WebElement | Literal[False]:
        row = next((r for r in d.find_elements(By.CSS_SELECTOR, "#keys-table tbody tr") if team in r.text), None)
        return row.find_element(By.XPATH, ".//button[text()='Revoke']") if row is not None else False

    polling.until(revoke_button).click()
    wait.until(seen.alert_is_present()).dismiss()
    assert team in by_id("keys-table").text
    polling.until(revoke_button).click()
    wait.until(seen.alert_is_present()).accept()
    polling.until(lambda _: team not in d.find_element(By.ID, "keys-table").text)

    # Logging out leaves nothing: not the key, not the field it was typed in.
    by_id("logout").click()
    assert by_id("admin-key").get_attribute("value") == ""
    assert d.execute_script("return sessionStorage.length") == 0
    # No script error and no failed load, but the wrong key's 401 at the start.
    logged = d.get_log("browser")
    assert not [e for e in logged if e["level"] == "SEVERE" and "401" not in e["message"]], logged
    assert all(Path(ARTIFACTS / f).exists() for f in ("1-keys.png", "4-spend.png"))
