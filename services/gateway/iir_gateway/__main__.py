"""`python -m iir_gateway`: serves the gateway with uvicorn (uvloop + httptools)."""

from __future__ import annotations

import sys

import uvicorn

from iir_gateway.cpus import auto_workers
from iir_gateway.networks import parse_networks
from iir_gateway.providers.config import ProvidersFileError, load_providers
from iir_gateway.routing.auto_router import RoutingFileError, load_policies
from iir_gateway.server.http_protocol import ConnectionLimits, guarded_protocol
from iir_gateway.settings import GatewaySettings
from iir_gateway.upstream.target import Timeouts
from iir_gateway.workers import share_between


def main() -> None:
    try:
        settings = GatewaySettings()
    except ValueError as exc:  # pydantic's ValidationError: one line per bad setting
        sys.exit(f"iir-gateway: invalid settings: {exc}")
    try:  # a bad configuration file stops the start with one clear line, not a traceback per worker
        load_providers(settings.providers_file, Timeouts())
        load_policies(settings.routing_file, settings.auto_default_model)
    except (ProvidersFileError, RoutingFileError) as exc:
        sys.exit(f"iir-gateway: {exc}")
    limits = ConnectionLimits(
        settings.header_timeout_s,
        settings.body_timeout_s,
        settings.max_connections_per_client,
        parse_networks(settings.trusted_proxies, "IIR_TRUSTED_PROXIES"),
    )
    workers = settings.gateway_workers or auto_workers()
    share_between(workers)
    uvicorn.run(
        "iir_gateway.app:create_asgi",
        factory=True,
        host=settings.gateway_host,
        port=settings.gateway_port,
        workers=workers,
        loop="uvloop",
        http=guarded_protocol(limits),
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=10,
        timeout_keep_alive=int(settings.keepalive_timeout_s),
        # Forwarded headers are read by the gateway itself, from IIR_TRUSTED_PROXIES only.
        proxy_headers=False,
    )


if __name__ == "__main__":
    main()
