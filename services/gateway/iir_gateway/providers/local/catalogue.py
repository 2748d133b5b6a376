"""The gateway's local copy of the registry's catalogue, kept current by the registry's Watch stream."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import grpc

from iir.v1 import registry_pb2
from iir_common.registry_watch import RegistryWatch
from iir_gateway.picking.kv_index import KvIndex

Event = registry_pb2.WatchEvent


class ModelCatalogue:
    """Models by public name. Reads are local; the registry pushes every change."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        on_metrics: Callable[[Sequence[registry_pb2.EndpointMetrics]], None] | None = None,
        on_change: Callable[[str], None] | None = None,
        kv_index: KvIndex | None = None,
    ) -> None:
        self._watch = RegistryWatch(channel, self.apply)
        self._kv_index = kv_index  # fed by KV_BLOCKS; the registry's whole index follows each snapshot
        self._on_metrics = on_metrics
        self._on_change = on_change  # the public name of a model that came, changed or went
        self.models: dict[str, registry_pb2.Model] = {}
        self.replicas: set[str] = set()  # every model's replica URLs
        self._replicas_gone: list[Callable[[set[str]], None]] = []
        # True once a snapshot arrived; a lost stream keeps the last catalogue (stale beats empty).
        self.synced = asyncio.Event()

    def get(self, name: str) -> registry_pb2.Model | None:
        return self.models.get(name)

    def on_replicas_gone(self, listener: Callable[[set[str]], None]) -> None:
        """After each change, `listener` gets the URLs of the replicas no model has any more."""
        self._replicas_gone.append(listener)

    def apply(self, event: registry_pb2.WatchEvent) -> None:
        changed: list[str] = []
        if event.type == Event.SNAPSHOT:
            changed = list(set(self.models) | {m.name for m in event.models})
            self.models = {m.name: m for m in event.models}
            self.synced.set()
            if self._kv_index is not None:
                self._kv_index.reset()
        elif event.type == Event.UPSERT:
            self.models[event.model.name] = event.model
            changed = [event.model.name]
        elif event.type == Event.DELETE:
            self.models.pop(event.model.name, None)
            changed = [event.model.name]
        elif event.type == Event.METRICS and self._on_metrics is not None:
            # Only the catalogue's replicas: a scrape of a replica that has left would bring its state back.
            self._on_metrics([m for m in event.metrics if m.url in self.replicas])
        elif event.type == Event.KV_BLOCKS and self._kv_index is not None:
            self._kv_index.apply(event.kv)
        if changed:
            self._replicas_changed()
        if self._on_change is not None:
            for name in changed:
                self._on_change(name)

    def _replicas_changed(self) -> None:
        replicas = {e.url for m in self.models.values() for e in m.endpoints}
        gone, self.replicas = self.replicas - replicas, replicas
        if gone:
            for listener in self._replicas_gone:
                listener(gone)

    @property
    def connected(self) -> bool:
        return self._watch.connected

    async def run(self) -> None:
        """Follows the Watch stream for ever; a lost stream keeps the last catalogue (stale beats empty)."""
        await self._watch.run()
