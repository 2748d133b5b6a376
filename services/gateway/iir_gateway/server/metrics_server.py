"""`/metrics` on a port of its own, so the public port (and the ingress in front of it) never serves it.

Every worker process binds the port with SO_REUSEPORT. With several workers the metrics are kept in
Prometheus' multiprocess files (`iir_gateway.workers`), and whichever worker takes a scrape answers for
all of them: counters and histograms summed, gauges summed over the live workers.
"""

from __future__ import annotations

import os

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from iir_gateway.workers import metrics_shared


class MetricsServer:
    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self.registry = registry
        if metrics_shared():
            self.registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(self.registry)
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), headers={"content-type": CONTENT_TYPE_LATEST})

    async def start(self) -> None:
        if not self.port:
            return
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port, reuse_port=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if metrics_shared():
            multiprocess.mark_process_dead(os.getpid())  # this worker's gauges stop counting
