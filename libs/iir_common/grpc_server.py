"""Runs a gRPC aio server with the standard health service and graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from iir_common.tracing import server_interceptors
from iir_common.tracing import shutdown as shutdown_tracing

log = logging.getLogger(__name__)

Registrar = Callable[[grpc.aio.Server], None]


class GrpcService:
    """A gRPC server bound to one port, serving `registrars` plus grpc.health.v1."""

    def __init__(
        self, registrars: Iterable[Registrar], service_names: Iterable[str], port: int, host: str = "127.0.0.1"
    ) -> None:
        self.server = grpc.aio.server(options=[("grpc.so_reuseport", 0)], interceptors=server_interceptors())
        for register in registrars:
            register(self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.service_names = ["", *service_names]
        self.port = self.server.add_insecure_port(f"{host}:{port}")
        if self.port == 0:
            raise RuntimeError(f"cannot bind gRPC port {host}:{port}")

    async def start(self) -> None:
        await self.server.start()
        for name in self.service_names:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float = 2.0) -> None:
        for name in self.service_names:
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(grace)


async def run_until_signal(
    service: GrpcService,
    name: str,
    on_start: Callable[[], Awaitable[None]] | None = None,
    on_stop: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Starts `service`, logs the port, waits for SIGINT/SIGTERM, then stops cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if on_start:
        await on_start()
    await service.start()
    log.info("%s listening", name, extra={"port": service.port})
    await stop.wait()
    log.info("%s stopping", name)
    await service.stop()
    if on_stop:
        await on_stop()
    shutdown_tracing()
