"""Requests waiting while every replica of a model is saturated: highest key priority first, bounded."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math


class Saturated(Exception):
    """No room came for a request of `model`: the queue is full, or its wait ran out."""

    def __init__(self, model: str, why: str, retry_after_s: int) -> None:
        super().__init__(f"Every replica of `{model}` is saturated and {why}; try again shortly.")
        self.model = model
        self.retry_after_s = retry_after_s


class PriorityGate:
    def __init__(self, max_waiting: int = 1000, timeout_s: float = 30.0) -> None:
        self.max_waiting = max_waiting
        self.timeout_s = timeout_s
        self._heaps: dict[str, list[tuple[int, int, asyncio.Future[None]]]] = {}
        self._order = itertools.count()
        self.waiting = 0
        self._by_model: dict[str, int] = {}

    def _full(self, model: str, why: str) -> Saturated:
        return Saturated(model, why, max(1, math.ceil(self.timeout_s / 10)))

    async def wait(self, model: str, priority: int, deadline: float | None = None) -> None:
        """Waits for `wake(model)` (a request of that model finished); refused when the queue is full or when
        `deadline` (loop time; default: `timeout_s` from now) passes: Saturated."""
        loop = asyncio.get_running_loop()
        remaining = self.timeout_s if deadline is None else deadline - loop.time()
        if self.waiting >= self.max_waiting:
            raise self._full(model, f"{self.waiting} requests are already waiting")
        future: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._heaps.setdefault(model, []), (-priority, next(self._order), future))
        self.waiting += 1
        self._by_model[model] = self._by_model.get(model, 0) + 1
        try:
            await asyncio.wait_for(asyncio.shield(future), max(0.0, remaining))
        except TimeoutError:
            raise self._full(model, f"no room came within {self.timeout_s:.0f}s") from None
        finally:
            self.waiting -= 1
            if self._by_model[model] <= 1:
                del self._by_model[model]
            else:
                self._by_model[model] -= 1
            if not future.done():
                future.cancel()  # left in the heap, skipped by wake()

    def held(self) -> dict[str, int]:
        """Requests waiting, by model."""
        return dict(self._by_model)

    def wake_all(self) -> None:
        """New load figures arrived: one waiter per model looks again."""
        for model in list(self._heaps):
            self.wake(model)

    def wake(self, model: str) -> None:
        heap = self._heaps.get(model)
        while heap:
            _, _, future = heapq.heappop(heap)
            if not future.done():
                future.set_result(None)
                return
        self._heaps.pop(model, None)
