"""The in-memory catalogue of models, and the fan-out of its changes to watchers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable

from iir.v1 import registry_pb2

log = logging.getLogger(__name__)

Event = registry_pb2.WatchEvent


class Catalogue:
    """Models by public name. Sources write into it; every Watch reads a snapshot then the changes.

    Each watcher's queue is bounded: a watcher that falls `max_pending` events behind (a stalled
    gateway) gets a fresh snapshot instead of the backlog, so a slow reader cannot grow the registry.
    A snapshot is followed by the events of `kv_snapshot` (the KV block index, when one is kept).
    """

    def __init__(self, max_pending: int = 1000) -> None:
        self._models: dict[str, registry_pb2.Model] = {}
        self._watchers: set[asyncio.Queue[Event | None]] = set()  # None: send a fresh snapshot
        self.max_pending = max_pending
        self.kv_snapshot: Callable[[], list[Event]] | None = None
        self.listeners: list[Callable[[], None]] = []  # called after each change of a model

    def get(self, name: str) -> registry_pb2.Model | None:
        return self._models.get(name)

    def models(self) -> list[registry_pb2.Model]:
        return sorted(self._models.values(), key=lambda m: m.name)

    def upsert(self, model: registry_pb2.Model) -> None:
        if self._models.get(model.name) == model:
            return
        self._models[model.name] = model
        self._changed()
        log.info(
            "model updated",
            extra={"model": model.name, "phase": model.phase, "ready_endpoints": sum(e.ready for e in model.endpoints)},
        )
        self._publish(Event(type=Event.UPSERT, model=model))

    def delete(self, name: str) -> None:
        model = self._models.pop(name, None)
        if model is not None:
            self._changed()
            log.info("model removed", extra={"model": name})
            self._publish(Event(type=Event.DELETE, model=model))

    def replace_source(self, source: str, models: Iterable[registry_pb2.Model]) -> None:
        """Makes the models of `source` exactly `models`: upserts them and deletes the rest."""
        fresh = {m.name: m for m in models}
        for name in [n for n, m in self._models.items() if m.source == source and n not in fresh]:
            self.delete(name)
        for model in fresh.values():
            self.upsert(model)

    def publish_metrics(self, metrics: list[registry_pb2.EndpointMetrics]) -> None:
        """Sends the endpoints' load to every watcher (not kept: the next scrape replaces it)."""
        if metrics:
            self._publish(Event(type=Event.METRICS, metrics=metrics))

    def publish_demand(self, demand: list[registry_pb2.ModelDemand]) -> None:
        """Sends the models whose held requests changed (totals over gateways) to every watcher."""
        if demand:
            self._publish(Event(type=Event.DEMAND, demand=demand))

    def publish_kv(self, updates: list[registry_pb2.KvBlockUpdate]) -> None:
        """Sends what changed in the replicas' KV caches to every watcher."""
        if updates:
            self._publish(Event(type=Event.KV_BLOCKS, kv=updates))

    def _changed(self) -> None:
        for listener in self.listeners:
            listener()

    def _publish(self, event: Event) -> None:
        for queue in self._watchers:
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(None)  # the state as it is when the watcher reads it, not as it is now
                log.warning("a watcher fell behind; it gets a fresh snapshot", extra={"pending": self.max_pending})

    def _snapshot(self) -> list[Event]:
        return [Event(type=Event.SNAPSHOT, models=self.models()), *(self.kv_snapshot() if self.kv_snapshot else [])]

    async def watch(self) -> AsyncIterator[Event]:
        """Yields a SNAPSHOT (and the KV index), then every change until the caller stops iterating."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue(self.max_pending)
        self._watchers.add(queue)
        try:
            for event in self._snapshot():
                yield event
            while True:
                got = await queue.get()
                for event in self._snapshot() if got is None else (got,):
                    yield event
        finally:
            self._watchers.discard(queue)
