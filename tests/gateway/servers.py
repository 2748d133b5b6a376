"""The gateway's neighbours in this process: the real auth and registry gRPC servers, aiohttp fakes of
upstreams on random ports, and an ASGI app's lifespan driven by hand."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web
from starlette.types import ASGIApp, Message

from iir.v1 import auth_pb2_grpc, registry_pb2_grpc
from iir_auth.grpc_api import AuthServicer
from iir_auth.settings import AuthSettings
from iir_auth.storage.audit_store import AuditStore
from iir_auth.storage.key_store import KeyStore
from iir_auth.storage.migrations import migrate
from iir_auth.storage.org_store import OrgStore
from iir_auth.storage.spend_store import SpendStore
from iir_common.grpc_server import GrpcService
from iir_registry.catalogue import Catalogue
from iir_registry.demand import DemandBook
from iir_registry.grpc_api import RegistryServicer
from iir_registry.sources.file_source import FileSource

# A shutdown that hangs fails the test instead of the whole run.
SHUTDOWN_TIMEOUT_S = 30.0


@contextlib.asynccontextmanager
async def serve_aiohttp(app: web.Application) -> AsyncIterator[str]:
    """`app` on a random loopback port; yields its base URL."""
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def auth_server(
    database_url: str, redis_url: str, redis_prefix: str, master_key: str, static_key: str
) -> AsyncIterator[GrpcService]:
    """The auth service (`python -m iir_auth` without the signal handling) on a random port."""
    settings = AuthSettings(
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        auth_port=0,
        master_key=master_key,
        allowed_keys=static_key,
    )
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=5)
    async with pool.acquire() as conn:
        await migrate(conn)
    redis = aioredis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=2)
    servicer = AuthServicer(
        KeyStore(pool),
        settings,
        redis,
        OrgStore(pool),
        SpendStore(pool, settings.spend_retention_days),
        AuditStore(pool),
    )
    service = GrpcService(
        [lambda s: auth_pb2_grpc.add_AuthServiceServicer_to_server(servicer, s)], ["iir.v1.AuthService"], 0
    )
    await service.start()
    try:
        yield service
    finally:
        await service.stop(grace=0)
        await pool.close()
        await redis.aclose()


@contextlib.asynccontextmanager
async def registry_server(models_file: Path) -> AsyncIterator[GrpcService]:
    """The registry with a file source (no KV events, no metrics scraping) on a random port."""
    catalogue = Catalogue()
    source = FileSource(models_file, catalogue, 0.1)
    source.start()
    demand = DemandBook(catalogue)
    expiry = asyncio.create_task(demand.run())
    servicer = RegistryServicer(catalogue, source, demand)
    service = GrpcService(
        [lambda s: registry_pb2_grpc.add_RegistryServiceServicer_to_server(servicer, s)], ["iir.v1.RegistryService"], 0
    )
    await service.start()
    try:
        yield service
    finally:
        await service.stop(grace=0)
        expiry.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await expiry
        await source.stop()


@contextlib.asynccontextmanager
async def health_only_server(service_name: str) -> AsyncIterator[GrpcService]:
    """A gRPC server that only answers health checks as `service_name` (the classifier's stand-in: the
    gateway connects at start, and `auto` falls back to its default model without an answer)."""
    service = GrpcService([], [service_name], 0)
    await service.start()
    try:
        yield service
    finally:
        await service.stop(grace=0)


@contextlib.asynccontextmanager
async def lifespan(app: ASGIApp) -> AsyncIterator[None]:
    """Runs `app`'s ASGI lifespan: startup before the block, shutdown after it."""
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    scope: dict[str, Any] = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}

    async def run() -> None:
        await app(scope, inbox.get, outbox.put)

    task = asyncio.create_task(run())

    async def step(message: str) -> None:
        await inbox.put({"type": f"lifespan.{message}"})
        reply = asyncio.ensure_future(outbox.get())
        await asyncio.wait({reply, task}, return_when=asyncio.FIRST_COMPLETED)
        if not reply.done():
            reply.cancel()
            task.result()  # the app's own exception
            raise RuntimeError(f"the app ended its lifespan during {message}")
        got = reply.result()
        if got["type"] != f"lifespan.{message}.complete":
            raise RuntimeError(f"lifespan {message} failed: {got.get('message', got)}")

    await step("startup")
    try:
        yield
    finally:
        try:
            async with asyncio.timeout(SHUTDOWN_TIMEOUT_S):
                await step("shutdown")
                await task
        except TimeoutError:
            task.cancel()
            raise AssertionError(f"the app did not shut down within {SHUTDOWN_TIMEOUT_S:.0f}s") from None
