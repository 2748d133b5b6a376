"""Scrapes each ready local endpoint's vLLM /metrics and pushes the load figures to every watcher."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re

import aiohttp

from iir.v1 import registry_pb2
from iir_registry.catalogue import Catalogue

log = logging.getLogger(__name__)

_WAITING = "vllm:num_requests_waiting"
_RUNNING = "vllm:num_requests_running"
_KV = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")


_LORA = "vllm:lora_requests_info"
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_vllm_metrics(url: str, text: str) -> registry_pb2.EndpointMetrics:
    """Sums the queue gauges over engines (data parallel ranks) and keeps the fullest KV cache. Of
    vllm:lora_requests_info, whose value is the time of its update and whose old label sets linger,
    the latest series says which adapters are running and waiting."""
    waiting = running = kv = 0.0
    lora: tuple[float, str] | None = None
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        # `name{labels} value [timestamp]`; label values may hold spaces, so read the value after the `}`.
        name, brace, rest = line.partition("{")
        fields = (rest.rpartition("}")[2] if brace else line).split()
        name = name.split()[0] if brace else fields.pop(0) if fields else ""
        try:
            value = float(fields[0])
        except (IndexError, ValueError):
            continue
        if name == _WAITING:
            waiting += value
        elif name == _RUNNING:
            running += value
        elif name in _KV:
            kv = max(kv, value)
        elif name == _LORA and (lora is None or value > lora[0]):
            lora = value, rest.rpartition("}")[0]
    metrics = registry_pb2.EndpointMetrics(url=url, waiting=waiting, running=running, kv_cache_usage=kv)
    if lora is not None:
        labels = dict(_LABEL.findall(lora[1]))
        metrics.running_adapters.extend(a for a in labels.get("running_lora_adapters", "").split(",") if a)
        metrics.waiting_adapters.extend(a for a in labels.get("waiting_lora_adapters", "").split(",") if a)
        with contextlib.suppress(ValueError):
            metrics.max_loras = int(labels.get("max_lora", "0"))
    return metrics


class MetricsScraper:
    def __init__(self, catalogue: Catalogue, interval_s: float = 1.0, timeout_s: float = 1.0) -> None:
        self.catalogue = catalogue
        self.interval_s = interval_s
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)

    def endpoints(self) -> set[str]:
        return {e.url for m in self.catalogue.models() if m.provider == "local" for e in m.endpoints if e.ready}

    async def scrape(self, session: aiohttp.ClientSession, url: str) -> registry_pb2.EndpointMetrics | None:
        try:
            async with session.get(f"{url.rstrip('/')}/metrics", timeout=self.timeout) as resp:
                if resp.status != 200:
                    return None
                return parse_vllm_metrics(url, await resp.text())
        except (aiohttp.ClientError, TimeoutError):
            return None  # the endpoint's readiness is the registry's business, not the scraper's

    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            while True:
                urls = self.endpoints()
                if urls:
                    results = await asyncio.gather(*(self.scrape(session, u) for u in sorted(urls)))
                    self.catalogue.publish_metrics([m for m in results if m is not None])
                await asyncio.sleep(self.interval_s)
