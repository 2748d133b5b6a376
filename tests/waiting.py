"""Waiting on a condition instead of sleeping, and skipping that CI turns into failures."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, NoReturn

import pytest


def wait_for(check: Callable[[], Any], timeout: float = 5.0, interval: float = 0.05) -> Any:
    """The first truthy value `check` returns within `timeout` seconds, else its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(interval)
    return check()


def unavailable(reason: str) -> NoReturn:
    """Skips a test whose tool or server is missing; with IIR_REQUIRE_ALL=1 (CI) it fails instead."""
    if os.environ.get("IIR_REQUIRE_ALL") == "1":
        pytest.fail(f"{reason} (IIR_REQUIRE_ALL=1: nothing may be skipped)")
    pytest.skip(reason)
