"""The KV event figures the registry exports (Prometheus names; served when IIR_REGISTRY_METRICS_PORT is set,
and over OTLP when telemetry is on). Counted in plain ints, read at scrape time: a counter's `inc` per
event would cost more than the event's indexing."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class KvStats(Collector):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.stored = self.removed = self.cleared = 0  # events applied, by kind
        self.batches = 0  # batches received (live or replayed)
        self.gaps_recovered = self.gaps_lost = 0  # sequence gaps: filled from the replay socket, or not
        self.restarts = 0  # replicas whose engine was found restarted (cleared)
        self.decode_errors = 0
        self.pushed = 0  # KV_BLOCKS events pushed to watchers
        self._blocks: Callable[[], int] = lambda: 0
        self._endpoints: Callable[[], int] = lambda: 0
        self.registry = registry or CollectorRegistry()
        self.registry.register(self)

    def watch_index(self, blocks: Callable[[], int], endpoints: Callable[[], int]) -> None:
        self._blocks, self._endpoints = blocks, endpoints

    def collect(self) -> Iterator[Metric]:
        events = CounterMetricFamily("iir_registry_kv_events", "KV events applied, by kind", labels=["kind"])
        for kind in ("stored", "removed", "cleared"):
            events.add_metric([kind], getattr(self, kind))
        yield events
        yield CounterMetricFamily(
            "iir_registry_kv_batches", "KV event batches received (live or replayed)", value=self.batches
        )
        gaps = CounterMetricFamily(
            "iir_registry_kv_gaps",
            "Gaps in a replica's event sequence: recovered from its replay socket, or lost (replica rebuilt)",
            labels=["outcome"],
        )
        gaps.add_metric(["recovered"], self.gaps_recovered)
        gaps.add_metric(["lost"], self.gaps_lost)
        yield gaps
        yield CounterMetricFamily(
            "iir_registry_kv_engine_restarts", "Replicas whose engine was found restarted", value=self.restarts
        )
        yield CounterMetricFamily(
            "iir_registry_kv_decode_errors", "KV event payloads not understood", value=self.decode_errors
        )
        yield CounterMetricFamily("iir_registry_kv_updates_pushed", "KV_BLOCKS events pushed", value=self.pushed)
        yield GaugeMetricFamily("iir_registry_kv_index_blocks", "Blocks held, per replica and tier", self._blocks())
        yield GaugeMetricFamily("iir_registry_kv_endpoints", "Replicas whose KV events are followed", self._endpoints())
