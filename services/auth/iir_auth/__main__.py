"""`python -m iir_auth`: runs the auth gRPC server."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import redis.asyncio as aioredis

from iir.v1 import auth_pb2_grpc
from iir_auth.grpc_api import AuthServicer
from iir_auth.settings import AuthSettings
from iir_auth.storage.audit_store import AuditStore
from iir_auth.storage.key_store import KeyStore
from iir_auth.storage.migrations import migrate
from iir_auth.storage.org_store import OrgStore
from iir_auth.storage.spend_store import SpendStore
from iir_common.grpc_server import GrpcService, run_until_signal
from iir_common.logging import setup_logging
from iir_common.tracing import setup_tracing

log = logging.getLogger("iir_auth")


async def serve(settings: AuthSettings) -> None:
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=10)
    async with pool.acquire() as conn:
        version = await migrate(conn)
    log.info("database ready", extra={"schema_version": version})
    redis = aioredis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=2)
    servicer = AuthServicer(
        KeyStore(pool),
        settings,
        redis,
        OrgStore(pool),
        SpendStore(pool, settings.spend_retention_days, settings.request_body_retention_days),
        AuditStore(pool),
    )
    service = GrpcService(
        [lambda s: auth_pb2_grpc.add_AuthServiceServicer_to_server(servicer, s)],
        ["iir.v1.AuthService"],
        settings.auth_port,
        settings.auth_host,
    )

    async def close() -> None:
        await pool.close()
        await redis.aclose()

    await run_until_signal(service, "auth", on_stop=close)


def main() -> None:
    settings = AuthSettings()
    setup_logging("auth", settings.log_level)
    setup_tracing("auth")
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
