"""API key rows in PostgreSQL."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from iir_auth.keys import hash_key, visible_prefix


@dataclass(frozen=True)
class KeyRecord:
    id: str
    name: str
    owner: str
    prefix: str
    admin: bool
    priority: int
    allowed_models: list[str] = field(default_factory=list)
    rpm_limit: int = 0
    tpm_limit: int = 0
    expires_at: datetime | None = None
    revoked_at: datetime | None = None


_COLUMNS = ("id, name, owner, prefix, admin, priority, allowed_models, rpm_limit, tpm_limit, "
            "expires_at, revoked_at")


def _record(row: asyncpg.Record) -> KeyRecord:
    return KeyRecord(**{**dict(row), "id": str(row["id"]), "allowed_models": list(row["allowed_models"])})


class KeyStore:
    """Reads and writes `api_keys`; never sees a key in clear except to hash it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def create(self, key: str, *, name: str, owner: str = "", admin: bool = False,
                     priority: int = 0, allowed_models: list[str] | None = None) -> KeyRecord:
        row = await self.pool.fetchrow(
            f"INSERT INTO api_keys (id, name, owner, prefix, key_hash, admin, priority, allowed_models)"
            f" VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {_COLUMNS}",
            uuid.uuid4(), name, owner, visible_prefix(key), hash_key(key), admin, priority,
            allowed_models or [],
        )
        return _record(row)

    async def find(self, key: str) -> KeyRecord | None:
        row = await self.pool.fetchrow(f"SELECT {_COLUMNS} FROM api_keys WHERE key_hash = $1", hash_key(key))
        return _record(row) if row else None
