"""API keys and their usage in PostgreSQL."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import asyncpg
import orjson

from iir_common.api_keys import hash_key, visible_prefix


@dataclass(frozen=True)
class KeySettings:
    """What a key may do; copied as is when a key is rotated."""

    name: str
    owner: str = ""
    description: str = ""
    admin: bool = False
    priority: int = 0
    allowed_models: list[str] = field(default_factory=list)
    rpm_limit: int = 0
    tpm_limit: int = 0
    budget_tokens: int = 0
    budget_period: str = "month"
    expires_at: datetime | None = None
    scrub_mode: str = ""
    cache_mode: str = ""
    team_id: str | None = None
    user_id: str | None = None
    max_budget: float = 0.0
    budget_duration: str = ""
    max_parallel_requests: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    blocked: bool = False
    # Percentages of max_budget at which the gateway's budget alert webhook is told (once per window each).
    budget_alert_thresholds: list[float] = field(default_factory=list)
    log_bodies: bool = False  # its requests are logged with their bodies


@dataclass(frozen=True)
class KeyRecord(KeySettings):
    id: str = ""
    prefix: str = ""
    key_hash: bytes = b""
    previous_key_hash: bytes | None = None
    previous_valid_until: datetime | None = None
    created_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None

    def settings(self) -> KeySettings:
        return KeySettings(**{f: getattr(self, f) for f in KeySettings.__dataclass_fields__})


@dataclass(frozen=True)
class UsageRow:
    key_id: str
    model: str
    day: date
    requests: int
    prompt_tokens: int
    completion_tokens: int


_COLUMNS = (
    "id, name, owner, description, prefix, key_hash, admin, priority, allowed_models, rpm_limit, "
    "tpm_limit, budget_tokens, budget_period, expires_at, scrub_mode, cache_mode, created_at, last_used_at, "
    "revoked_at, team_id, user_id, max_budget, budget_duration, max_parallel_requests, metadata, blocked, "
    "previous_key_hash, previous_valid_until, budget_alert_thresholds, log_bodies"
)


def _record(row: asyncpg.Record) -> KeyRecord:
    data: dict[str, Any] = dict(row)
    team = row["team_id"]
    return KeyRecord(
        **{
            **data,
            "id": str(row["id"]),
            "team_id": str(team) if team else None,
            "allowed_models": list(row["allowed_models"]),
            "metadata": orjson.loads(row["metadata"]),
            "budget_alert_thresholds": list(row["budget_alert_thresholds"]),
        }
    )


def _uuid(text: str | None) -> uuid.UUID | None:
    return uuid.UUID(text) if text else None


def _column(name: str, value: Any) -> Any:
    """A setting as its column takes it: owners' ids (NULL for none), JSONB as text."""
    if name == "team_id":
        return _uuid(value)
    if name == "user_id":
        return value or None
    return orjson.dumps(value).decode() if name == "metadata" else value


class KeyStore:
    """Reads and writes `api_keys` and `key_usage`; sees a key in clear only to hash it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def create(self, key: str, settings: KeySettings, conn: asyncpg.Connection | None = None) -> KeyRecord:
        s = settings
        row = await (conn or self.pool).fetchrow(
            f"INSERT INTO api_keys (id, name, owner, description, prefix, key_hash, admin, priority, allowed_models,"
            f" rpm_limit, tpm_limit, budget_tokens, budget_period, expires_at, scrub_mode, cache_mode, team_id,"
            f" user_id, max_budget, budget_duration, max_parallel_requests, metadata, blocked,"
            f" budget_alert_thresholds, log_bodies)"
            f" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20,"
            f" $21, $22, $23, $24, $25) RETURNING {_COLUMNS}",
            uuid.uuid4(),
            s.name,
            s.owner,
            s.description,
            visible_prefix(key),
            hash_key(key),
            s.admin,
            s.priority,
            s.allowed_models,
            s.rpm_limit,
            s.tpm_limit,
            s.budget_tokens,
            s.budget_period,
            s.expires_at,
            s.scrub_mode,
            s.cache_mode,
            _uuid(s.team_id),
            s.user_id or None,
            s.max_budget,
            s.budget_duration,
            s.max_parallel_requests,
            orjson.dumps(s.metadata).decode(),
            s.blocked,
            s.budget_alert_thresholds,
            s.log_bodies,
        )
        return _record(row)

    async def find(self, key: str) -> KeyRecord | None:
        """The key with this secret, or whose previous secret it is while its grace period lasts."""
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS} FROM api_keys WHERE key_hash = $1"
            " OR (previous_key_hash = $1 AND previous_valid_until > now()) LIMIT 1",
            hash_key(key),
        )
        return _record(row) if row else None

    async def by_owner(self, team_id: str | None = None, user_id: str | None = None) -> builtins.list[KeyRecord]:
        """The keys (not revoked) of a team or a user."""
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM api_keys WHERE revoked_at IS NULL AND (team_id = $1 OR user_id = $2)",
            _uuid(team_id),
            user_id,
        )
        return [_record(r) for r in rows]

    async def regenerate(self, key_id: str, new_key: str, grace_s: int) -> KeyRecord | None:
        """A new secret under the same id; the old one works `grace_s` more seconds. None: no such live key."""
        row = await self.pool.fetchrow(
            f"UPDATE api_keys SET previous_key_hash = CASE WHEN $3 > 0 THEN key_hash END,"
            " previous_valid_until = CASE WHEN $3 > 0 THEN now() + make_interval(secs => $3) END,"
            f" key_hash = $2, prefix = $4 WHERE id = $1 AND revoked_at IS NULL RETURNING {_COLUMNS}",
            uuid.UUID(key_id),
            hash_key(new_key),
            grace_s,
            visible_prefix(new_key),
        )
        return _record(row) if row else None

    async def get(self, key_id: str) -> KeyRecord | None:
        try:
            ident = uuid.UUID(key_id)
        except ValueError:
            return None
        row = await self.pool.fetchrow(f"SELECT {_COLUMNS} FROM api_keys WHERE id = $1", ident)
        return _record(row) if row else None

    async def list(self, include_revoked: bool = False) -> list[KeyRecord]:
        where = "" if include_revoked else "WHERE revoked_at IS NULL"
        rows = await self.pool.fetch(f"SELECT {_COLUMNS} FROM api_keys {where} ORDER BY created_at, id")
        return [_record(r) for r in rows]

    async def revoke(self, key_id: str, conn: asyncpg.Connection | None = None) -> KeyRecord | None:
        """Revokes the key (idempotent); None when there is no such key."""
        try:
            ident = uuid.UUID(key_id)
        except ValueError:
            return None
        row = await (conn or self.pool).fetchrow(
            f"UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1 RETURNING {_COLUMNS}", ident
        )
        return _record(row) if row else None

    # The columns a key's settings may change (its secret, identity and timestamps may not).
    UPDATABLE = frozenset(
        {
            "name",
            "owner",
            "description",
            "priority",
            "allowed_models",
            "rpm_limit",
            "tpm_limit",
            "budget_tokens",
            "budget_period",
            "expires_at",
            "scrub_mode",
            "cache_mode",
            "team_id",
            "user_id",
            "max_budget",
            "budget_duration",
            "max_parallel_requests",
            "metadata",
            "blocked",
            "budget_alert_thresholds",
            "log_bodies",
        }
    )

    async def update(self, key_id: str, changes: dict[str, Any]) -> KeyRecord | None:
        """Changes the settings of a key that is not revoked; None when there is no such key."""
        try:
            ident = uuid.UUID(key_id)
        except ValueError:
            return None
        names = [n for n in changes if n in self.UPDATABLE]  # never an unknown column in the SQL
        if not names:
            return await self.get(key_id)
        sets = ", ".join(f"{n} = ${i}" for i, n in enumerate(names, 2))
        row = await self.pool.fetchrow(
            f"UPDATE api_keys SET {sets} WHERE id = $1 AND revoked_at IS NULL RETURNING {_COLUMNS}",
            ident,
            *(_column(n, changes[n]) for n in names),
        )
        return _record(row) if row else None

    async def rotate(self, key_id: str, new_key: str) -> tuple[KeyRecord, KeyRecord] | None:
        """Revokes `key_id` and creates its successor, atomically; (old, new) or None."""
        async with self.pool.acquire() as conn, conn.transaction():
            old = await self.revoke(key_id, conn)
            if old is None:
                return None
            return old, await self.create(new_key, old.settings(), conn)

    async def record_usage(self, rows: Iterable[UsageRow]) -> None:
        """Adds the counts (one statement for the whole batch) and stamps the keys as used."""
        rows = list(rows)
        if not rows:
            return
        ids = [uuid.UUID(r.key_id) for r in rows]
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO key_usage (key_id, model, day, requests, prompt_tokens, completion_tokens)"
                " SELECT u.key_id, u.model, u.day, u.requests, u.prompt_tokens, u.completion_tokens"
                " FROM unnest($1::uuid[], $2::text[], $3::date[], $4::bigint[], $5::bigint[], $6::bigint[])"
                "   AS u(key_id, model, day, requests, prompt_tokens, completion_tokens)"
                " WHERE EXISTS (SELECT 1 FROM api_keys k WHERE k.id = u.key_id)"
                " ON CONFLICT (key_id, model, day) DO UPDATE SET"
                "   requests = key_usage.requests + EXCLUDED.requests,"
                "   prompt_tokens = key_usage.prompt_tokens + EXCLUDED.prompt_tokens,"
                "   completion_tokens = key_usage.completion_tokens + EXCLUDED.completion_tokens",
                ids,
                [r.model for r in rows],
                [r.day for r in rows],
                [r.requests for r in rows],
                [r.prompt_tokens for r in rows],
                [r.completion_tokens for r in rows],
            )
            await conn.execute("UPDATE api_keys SET last_used_at = now() WHERE id = ANY($1::uuid[])", list(set(ids)))

    async def usage(self, key_id: str, since: date | None, until: date | None) -> builtins.list[UsageRow]:
        rows = await self.pool.fetch(
            "SELECT key_id, model, day, requests, prompt_tokens, completion_tokens FROM key_usage"
            " WHERE key_id = $1 AND ($2::date IS NULL OR day >= $2) AND ($3::date IS NULL OR day <= $3)"
            " ORDER BY day, model",
            uuid.UUID(key_id),
            since,
            until,
        )
        return [
            UsageRow(str(r["key_id"]), r["model"], r["day"], r["requests"], r["prompt_tokens"], r["completion_tokens"])
            for r in rows
        ]
