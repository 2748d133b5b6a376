"""Requests held for a local model scaled to zero, until its first replica is ready.

The first request held for a model tells the registry at once (through `on_demand`), which tells the
operator; when the catalogue shows a ready replica, every held request of that model goes. A bounded
number are held; past the timeout a request gets 503 `model_cold_start_timeout` with Retry-After.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from iir_gateway.errors import APIError

RETRY_AFTER_S = 30


class ColdStarts:
    def __init__(
        self,
        max_held: int = 1000,
        timeout_s: float = 180.0,
        on_demand: Callable[[], None] | None = None,
        observe: Callable[[str, float], None] | None = None,
    ) -> None:
        self.max_held = max_held
        self.timeout_s = timeout_s
        self.on_demand = on_demand  # called when a request is held or released
        self._observe = observe  # (model, seconds from its first held request to its first ready replica)
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._since: dict[str, float] = {}

    def held(self) -> dict[str, int]:
        return {model: len(w) for model, w in self._waiters.items() if w}

    @property
    def total(self) -> int:
        return sum(len(w) for w in self._waiters.values())

    async def hold(self, model: str, ready: Callable[[], bool]) -> None:
        """Waits until `ready()` holds for `model` (checked on each `changed(model)`), or raises the 503.
        A model that is ready already is not held, counted or reported."""
        if ready():
            return
        if self.total >= self.max_held:
            raise self._timeout(model, f"{self.total} requests are already held for cold starts")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        waiters = self._waiters.setdefault(model, set())
        self._since.setdefault(model, time.monotonic())
        try:
            while not ready():
                future: asyncio.Future[None] = loop.create_future()
                waiters.add(future)
                if self.on_demand is not None:
                    self.on_demand()
                try:
                    await asyncio.wait_for(future, max(0.0, deadline - loop.time()))
                except TimeoutError:
                    raise self._timeout(model, f"no replica became ready within {self.timeout_s:.0f}s") from None
                finally:
                    waiters.discard(future)
        finally:
            if not waiters:
                self._waiters.pop(model, None)
                started = self._since.pop(model, None)
                if started is not None and ready() and self._observe is not None:
                    self._observe(model, time.monotonic() - started)
            if self.on_demand is not None:
                self.on_demand()

    def changed(self, model: str) -> None:
        """The catalogue changed `model`: its held requests look again."""
        for future in list(self._waiters.get(model, ())):
            if not future.done():
                future.set_result(None)

    @staticmethod
    def _timeout(model: str, why: str) -> APIError:
        return APIError(
            503,
            f"The model `{model}` is starting from zero replicas and {why}; try again shortly.",
            code="model_cold_start_timeout",
            type="server_error",
            headers={"retry-after": str(RETRY_AFTER_S)},
        )
