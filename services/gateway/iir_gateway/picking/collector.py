"""Exports what the gateway knows of each endpoint at scrape time (nothing is updated per request)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from iir_gateway.picking.kv_index import KvIndex
from iir_gateway.picking.state import EndpointStates


class EndpointStateCollector(Collector):
    def __init__(self, states: EndpointStates, kv_index: KvIndex | None = None) -> None:
        self.states = states
        self.kv_index = kv_index

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        families = {
            attr: GaugeMetricFamily(f"iir_gateway_endpoint_{attr}", doc, labels=["endpoint"])
            for attr, doc in (
                ("outstanding", "Requests this gateway process has in flight per endpoint."),
                ("waiting", "vllm:num_requests_waiting as last pushed by the registry."),
                ("running", "vllm:num_requests_running as last pushed by the registry."),
                ("kv_cache_usage", "vllm:kv_cache_usage_perc as last pushed by the registry."),
            )
        }
        ejected = GaugeMetricFamily(
            "iir_gateway_endpoint_ejected", "1 while an endpoint is ejected for failures.", labels=["endpoint"]
        )
        counters = {
            attr: CounterMetricFamily(f"iir_gateway_endpoint_{attr}", doc, labels=["endpoint"])
            for attr, doc in (
                ("prompt_tokens", "Prompt tokens of the requests this gateway process picked the endpoint for."),
                ("predicted_cached_tokens", "Of those, the tokens picking predicted the endpoint's KV cache held."),
            )
        }
        now = time.monotonic()
        for state in self.states.all():
            for attr, family in families.items():
                family.add_metric([state.url], float(getattr(state, attr)))
            for attr, counter in counters.items():
                counter.add_metric([state.url], float(getattr(state, attr)))
            ejected.add_metric([state.url], 0.0 if state.healthy(now) else 1.0)
        yield from families.values()
        yield from counters.values()
        yield ejected
        if self.kv_index is not None:
            blocks = GaugeMetricFamily(
                "iir_gateway_endpoint_kv_blocks",
                "KV blocks the endpoint holds on its GPU, as the cluster index (its KV events) says.",
                labels=["endpoint"],
            )
            for url in self.kv_index.urls():
                blocks.add_metric([url], float(self.kv_index.held(url)))
            yield blocks
