"""Waiting on a condition instead of sleeping (the one polling helper of the tests, sync and async), and
skipping that CI turns into failures."""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal, NoReturn, TypeVar, overload

import pytest

T = TypeVar("T")


@overload
def wait_for(
    check: Callable[[], T | Literal[False] | None], timeout: float = ..., interval: float = ..., *, what: str
) -> T: ...


@overload
def wait_for(check: Callable[[], T], timeout: float = ..., interval: float = ...) -> T: ...


def wait_for(check: Callable[[], Any], timeout: float = 5.0, interval: float = 0.05, what: str = "") -> Any:
    """The first truthy value `check` returns within `timeout` seconds. Past it: the last value, or,
    when `what` names the condition, an AssertionError saying what never happened (so a caller naming it
    gets the truthy value, never None or False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(interval)
    got = check()
    if not got and what:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {got!r}")
    return got


async def eventually(check: Callable[[], Awaitable[Any] | Any], timeout: float = 5.0) -> Any:
    """`wait_for` inside an event loop: polls `check` (sync or async) until it gives something truthy;
    fails with the last value otherwise."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout}s; last value: {last!r}")


def unavailable(reason: str) -> NoReturn:
    """Skips a test whose tool or server is missing; with IIR_REQUIRE_ALL=1 (CI) it fails instead."""
    if os.environ.get("IIR_REQUIRE_ALL") == "1":
        pytest.fail(f"{reason} (IIR_REQUIRE_ALL=1: nothing may be skipped)")
    pytest.skip(reason)
