"""Exports a prometheus_client registry over OTLP too (when `OTEL_EXPORTER_OTLP_ENDPOINT` is set).

The registry stays the single source of truth, served at /metrics; every export interval
(`OTEL_METRIC_EXPORT_INTERVAL`, default 60 s) its families are read once and reported as OTel
observable instruments: counters as monotonic sums, gauges as gauges, histograms as their
`_bucket` (with `le`), `_sum` and `_count` series, as Prometheus names them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry

from iir_common.tracing import enabled


class _Snapshot:
    """One read of the registry, shared by every instrument's callback within an export."""

    def __init__(self, registry: CollectorRegistry, max_age_s: float = 1.0) -> None:
        self.registry = registry
        self.max_age_s = max_age_s
        self.at = 0.0
        self.samples: dict[str, list[tuple[dict[str, str], float]]] = {}

    def series(self, name: str) -> list[tuple[dict[str, str], float]]:
        now = time.monotonic()
        if now - self.at > self.max_age_s:
            self.samples = {}
            for family in self.registry.collect():
                for sample in family.samples:
                    self.samples.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
            self.at = now
        return self.samples.get(name, [])


def _series_names(registry: CollectorRegistry) -> Iterable[tuple[str, str, str]]:
    """(sample name, family type, description) of every series the registry can report."""
    for family in registry.collect():
        kind = family.type
        if kind == "counter":
            yield family.name + "_total", "counter", family.documentation
        elif kind == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                yield family.name + suffix, "counter", family.documentation
        elif kind in ("gauge", "unknown"):
            yield family.name, "gauge", family.documentation


def export_registry(registry: CollectorRegistry, service: str) -> Any:
    """Starts the periodic OTLP export of `registry`; returns the MeterProvider, or None when off."""
    if not enabled():
        return None
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    provider = MeterProvider(
        resource=Resource.create({"service.name": f"iir-{service}", "service.namespace": "iir"}),
        metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())],
    )
    meter = provider.get_meter("iir")
    snapshot = _Snapshot(registry)
    for name, kind, doc in _series_names(registry):

        def callback(options: CallbackOptions, name: str = name) -> Iterable[Observation]:
            return [Observation(value, labels) for labels, value in snapshot.series(name)]

        if kind == "counter":
            meter.create_observable_counter(name, callbacks=[callback], description=doc)
        else:
            meter.create_observable_gauge(name, callbacks=[callback], description=doc)
    return provider
