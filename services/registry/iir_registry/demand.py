"""The requests gateways hold per model, summed over gateways, pushed to every watcher as they change.

Each gateway's report replaces its previous one. A gateway resends while it holds anything, so a
report older than `ttl_s` is a gateway that died or lost its way here: its requests stop counting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from iir.v1 import registry_pb2
from iir_registry.catalogue import Catalogue


class DemandBook:
    def __init__(self, catalogue: Catalogue, ttl_s: float = 10.0) -> None:
        self.catalogue = catalogue
        self.ttl_s = ttl_s
        self._reports: dict[str, tuple[float, dict[str, int]]] = {}  # gateway → (when, held by model)
        self._totals: dict[str, int] = {}

    def totals(self) -> dict[str, int]:
        return dict(self._totals)

    def report(self, gateway: str, models: Iterable[registry_pb2.ModelDemand], now: float | None = None) -> None:
        # Only models the catalogue has: a made-up name grows nothing here and reaches no one.
        held = {m.model: int(m.held) for m in models if m.held > 0 and self.catalogue.get(m.model) is not None}
        if held:
            self._reports[gateway] = (time.monotonic() if now is None else now, held)
        else:
            self._reports.pop(gateway, None)
        self._recount()

    def expire(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        stale = [g for g, (when, _) in self._reports.items() if now - when > self.ttl_s]
        for gateway in stale:
            del self._reports[gateway]
        if stale:
            self._recount()

    def _recount(self) -> None:
        totals: dict[str, int] = {}
        for _, held in self._reports.values():
            for model, n in held.items():
                totals[model] = totals.get(model, 0) + n
        changed = [
            registry_pb2.ModelDemand(model=m, held=totals.get(m, 0))
            for m in sorted(set(totals) | set(self._totals))
            if totals.get(m, 0) != self._totals.get(m, 0)
        ]
        self._totals = totals
        self.catalogue.publish_demand(changed)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_s / 4)
            self.expire()
