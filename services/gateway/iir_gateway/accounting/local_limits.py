"""Limits counted in this gateway process while Redis cannot be reached (`IIR_LIMITS_ON_REDIS_ERROR=local`).

Each requests- and tokens-per-minute bucket is kept in memory at the scope's own limit and burst, and the
key's parallel slots are counted here: with N gateway replicas a key gets at most N times its limits while
Redis is away. Budgets are not known here: a request that needs one is refused by the caller."""

from __future__ import annotations

import time

_MAX_ENTRIES = 100_000  # buckets and counters kept at once; full ones are dropped first beyond it


class LocalLimits:
    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # name → (level, at)
        self._running: dict[str, int] = {}  # key id → requests running

    def _level(self, name: str, limit: int, cap: float, now: float) -> float:
        level, at = self._buckets.get(name, (cap, now))
        return min(cap, level + max(0.0, now - at) * limit / 60.0)

    def admit(
        self, buckets: list[tuple[str, int, float, int]], key_id: str, max_parallel: int
    ) -> tuple[int, int, list[int]]:
        """Takes `cost` from every (name, limit, cap, cost) bucket and a parallel slot, or nothing.
        Returns (0 allowed / index of the refusing bucket, 1-based / len + 1 for parallel, wait ms, levels)."""
        now = time.monotonic()
        levels = [self._level(name, limit, cap, now) for name, limit, cap, _ in buckets]
        for i, ((_, limit, cap, cost), level) in enumerate(zip(buckets, levels, strict=True), 1):
            if cost > cap:
                return i, -1, [int(v) for v in levels]
            if level < cost:
                return i, int((cost - level) * 60000 / limit) + 1, [int(v) for v in levels]
        if max_parallel > 0 and self._running.get(key_id, 0) >= max_parallel:
            return len(buckets) + 1, 1000, [int(v) for v in levels]
        if len(self._buckets) > _MAX_ENTRIES:
            self._buckets.clear()  # an outage long and wide enough to fill it: start the minute again
        for i, (name, _, _, cost) in enumerate(buckets):
            levels[i] -= cost
            self._buckets[name] = (levels[i], now)
        if max_parallel > 0:
            self._running[key_id] = self._running.get(key_id, 0) + 1
        return 0, 0, [int(v) for v in levels]

    def settle(self, buckets: list[tuple[str, int, float, int]], key_id: str, parallel: bool) -> None:
        """Gives back each bucket's `refund` (the last item; negative takes more) and frees the slot."""
        now = time.monotonic()
        for name, limit, cap, refund in buckets:
            if refund and name in self._buckets:
                self._buckets[name] = (min(cap, self._level(name, limit, cap, now) + refund), now)
        if parallel and self._running.get(key_id, 0) > 0:
            self._running[key_id] -= 1
            if not self._running[key_id]:
                del self._running[key_id]
