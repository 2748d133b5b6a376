"""`python -m iir_registry`: runs the registry gRPC server with its model source."""

from __future__ import annotations

import asyncio

from prometheus_client import start_http_server

from iir.v1 import registry_pb2_grpc
from iir_common.grpc_server import GrpcService, run_until_signal
from iir_common.kube import Kube
from iir_common.logging import setup_logging
from iir_common.otlp_metrics import export_registry
from iir_common.tracing import setup_tracing
from iir_registry.catalogue import Catalogue
from iir_registry.demand import DemandBook
from iir_registry.grpc_api import RegistryServicer
from iir_registry.kv_events.service import KvBlocks
from iir_registry.kv_events.stats import KvStats
from iir_registry.metrics_scraper import MetricsScraper
from iir_registry.settings import RegistrySettings
from iir_registry.sources import ModelSource
from iir_registry.sources.file_source import FileSource
from iir_registry.sources.kubernetes_source import KubernetesSource


async def make_source(settings: RegistrySettings, catalogue: Catalogue) -> ModelSource:
    if settings.registry_source == "kubernetes":
        kube = await Kube.connect(settings.kube_server)
        return KubernetesSource(kube, catalogue, settings.registry_namespace or None)
    return FileSource(settings.models_file, catalogue, settings.models_file_poll_s)


async def serve(settings: RegistrySettings) -> None:
    catalogue = Catalogue()
    stats = KvStats()
    kv = None
    if settings.kv_events:
        kv = KvBlocks(
            catalogue,
            stats,
            settings.kv_events_topic,
            settings.kv_flush_interval_s,
            settings.kv_flush_max_hashes,
            settings.kv_replay_timeout_s,
        )
        kv.start()  # before the source: the first listing's endpoints are followed at once
    if settings.registry_metrics_port:
        start_http_server(settings.registry_metrics_port, settings.registry_host, stats.registry)
    meter_provider = export_registry(stats.registry, "registry")
    source = await make_source(settings, catalogue)
    source.start()
    scraper = None
    if settings.metrics_scrape_interval_s > 0:
        scraper = asyncio.create_task(MetricsScraper(catalogue, settings.metrics_scrape_interval_s).run())
    demand = DemandBook(catalogue)
    expiry = asyncio.create_task(demand.run())
    servicer = RegistryServicer(catalogue, source, demand)
    service = GrpcService(
        [lambda s: registry_pb2_grpc.add_RegistryServiceServicer_to_server(servicer, s)],
        ["iir.v1.RegistryService"],
        settings.registry_port,
        settings.registry_host,
    )

    async def stop() -> None:
        expiry.cancel()
        if scraper is not None:
            scraper.cancel()
        await source.stop()
        if kv is not None:
            await kv.stop()
        if meter_provider is not None:
            meter_provider.shutdown()

    await run_until_signal(service, "registry", on_stop=stop)


def main() -> None:
    settings = RegistrySettings()
    setup_logging("registry", settings.log_level)
    setup_tracing("registry")
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
