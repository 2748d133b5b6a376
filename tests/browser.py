"""Headless Chromium (Debian's, driven by Selenium through chromedriver) for the tests that run what a
browser runs: the admin UI, a hostile page, the seeds' `EventSource` example."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from typing import TYPE_CHECKING

from tests.waiting import unavailable

if TYPE_CHECKING:
    from selenium.webdriver import Chrome

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@contextlib.contextmanager
def chromium(*flags: str) -> Iterator[Chrome]:
    """A headless Chromium with `flags` besides the usual ones; unavailable without `make browser`."""
    if not (CHROMIUM and DRIVER):
        unavailable("chromium and chromedriver are not installed (`make browser`)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900", *flags):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()
