"""The one 429 policy of jobs and batch lines, on a fake sleep: a rate limit is waited out (for its
`retry-after`, within bounds, a bounded number of times), a used-up budget or any other error never."""

from __future__ import annotations

import asyncio

import pytest

from iir_gateway.errors import APIError
from iir_gateway.pipeline.rate_limit_waits import MAX_WAIT_S, MAX_WAITS, MIN_WAIT_S, RateLimitWaits


class FakeSleep:
    def __init__(self) -> None:
        self.slept: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)


def limited(retry_after: str = "7", code: str = "rate_limit_exceeded", status: int = 429) -> APIError:
    return APIError(status, "slow down", code=code, headers={"retry-after": retry_after} if retry_after else None)


def after(errors: list[APIError]) -> tuple[list[bool], list[float]]:
    sleep = FakeSleep()
    waits = RateLimitWaits(sleep)
    return [asyncio.run(waits.after(e)) for e in errors], sleep.slept


def test_a_rate_limit_is_waited_for_as_long_as_its_retry_after_says() -> None:
    assert after([limited("7")]) == ([True], [7.0])


@pytest.mark.parametrize(("retry_after", "slept"), [("0", MIN_WAIT_S), ("3600", MAX_WAIT_S)])
def test_each_wait_is_bounded(retry_after: str, slept: float) -> None:
    assert after([limited(retry_after)]) == ([True], [slept])


@pytest.mark.parametrize(
    "error",
    [
        limited(code="insufficient_quota"),  # a used-up budget resets in hours or days
        limited(retry_after=""),  # no time to wait for
        limited(retry_after="Wed, 21 Oct 2015 07:28:00 GMT"),
        limited(status=503),
        APIError(400, "bad", code="invalid_value"),
    ],
)
def test_anything_but_a_rate_limit_with_a_retry_after_fails_at_once(error: APIError) -> None:
    assert after([error]) == ([False], [])


def test_the_work_gives_up_after_the_last_wait() -> None:
    tries, slept = after([limited("1")] * (MAX_WAITS + 1))
    assert tries == [True] * MAX_WAITS + [False] and len(slept) == MAX_WAITS
