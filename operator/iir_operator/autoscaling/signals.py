"""What the autoscaler knows of each model's load: the registry's Watch stream (the catalogue, the vLLM
figures it scrapes from every ready replica, and the requests gateways hold), kept current in memory."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from iir.v1 import registry_pb2
from iir_common.registry_watch import RegistryWatch
from iir_operator.autoscaling.rule import Figures

Event = registry_pb2.WatchEvent


class RegistrySignals:
    def __init__(self, channel: grpc.aio.Channel, on_demand: Callable[[], None] | None = None) -> None:
        self._watch = RegistryWatch(channel, self.apply, on_lost=self._lost, max_backoff_s=5.0)
        self.on_demand = on_demand  # a model's held requests changed: decide now, not at the next tick
        self.models: dict[str, registry_pb2.Model] = {}
        self.metrics: dict[str, registry_pb2.EndpointMetrics] = {}
        self.held: dict[str, int] = {}

    def figures(self, namespace: str, name: str) -> Figures | None:
        """The figures of the InferenceModel `namespace/name`; None when the registry does not list it."""
        mine = [m for m in self.models.values() if m.namespace == namespace and m.resource_name == name]
        model = next((m for m in mine if not m.base_model), None)  # the rest are its LoRA adapters
        if model is None:
            return None
        ready = [self.metrics.get(e.url) for e in model.endpoints if e.ready]
        seen = [m for m in ready if m is not None]
        return Figures(
            ready=len(ready),
            running=sum(m.running for m in seen),
            waiting=sum(m.waiting for m in seen),
            held=sum(self.held.get(m.name, 0) for m in mine),
            kv_cache_usage=sum(m.kv_cache_usage for m in seen) / len(seen) if seen else 0.0,
        )

    def apply(self, event: registry_pb2.WatchEvent) -> None:
        if event.type == Event.SNAPSHOT:
            self.models = {m.name: m for m in event.models}
        elif event.type == Event.UPSERT:
            self.models[event.model.name] = event.model
        elif event.type == Event.DELETE:
            self.models.pop(event.model.name, None)
        elif event.type == Event.METRICS:
            for m in event.metrics:
                self.metrics[m.url] = m
        elif event.type == Event.DEMAND:
            for d in event.demand:
                if d.held > 0:
                    self.held[d.model] = d.held
                else:
                    self.held.pop(d.model, None)
            if self.on_demand is not None:
                self.on_demand()
        if event.type in (Event.SNAPSHOT, Event.UPSERT, Event.DELETE):
            live = {e.url for m in self.models.values() for e in m.endpoints}
            self.metrics = {u: m for u, m in self.metrics.items() if u in live}

    @property
    def connected(self) -> bool:
        return self._watch.connected

    def _lost(self) -> None:
        self.held = {}  # what gateways hold is unknown until the stream is back

    async def run(self) -> None:
        """Follows the Watch for ever, reconnecting with backoff; while cut off, `connected` is False."""
        await self._watch.run()
