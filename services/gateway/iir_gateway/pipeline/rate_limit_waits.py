"""The one 429 policy of work that runs in the background for a key (queued jobs, batch lines): a request
refused by a rate limit (the key's, its user's or team's requests or tokens per minute, a saturated model,
an upstream's own limit) waits for the `retry-after` it was given and tries again; one refused by a
used-up budget (`insufficient_quota`) fails at once, as budgets reset in hours or days, not seconds.

The numbers: each wait lasts `retry-after` seconds, at least MIN_WAIT_S and at most MAX_WAIT_S (a per-minute
bucket has room again within a minute), and the work gives up after MAX_WAITS waits (about ten minutes at
most), failing with the last 429. A 429 without a `retry-after` in seconds is not waited for."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from iir_gateway.errors import APIError

MAX_WAITS = 20
MIN_WAIT_S = 1.0
MAX_WAIT_S = 30.0

Sleep = Callable[[float], Awaitable[None]]


def retry_in(error: APIError) -> float | None:
    """How long to wait before trying again after `error`; None when the work must fail with it."""
    retry = error.headers.get("retry-after", "")
    if error.status != 429 or error.code == "insufficient_quota" or not retry.isdigit():
        return None
    return min(max(float(retry), MIN_WAIT_S), MAX_WAIT_S)


class RateLimitWaits:
    """The waits of one piece of work (a job, a batch line): `after` each refusal, whether to try again."""

    def __init__(self, sleep: Sleep = asyncio.sleep) -> None:
        self.sleep = sleep
        self.waited = 0

    async def after(self, error: APIError) -> bool:
        """Waits and returns True when the work should try again after `error`; False (at once) when it
        must fail with it: not a rate limit, a used-up budget, or MAX_WAITS waits already."""
        pause = retry_in(error)
        if pause is None or self.waited >= MAX_WAITS:
            return False
        self.waited += 1
        await self.sleep(pause)
        return True
