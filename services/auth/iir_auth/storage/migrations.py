"""Versioned schema migrations, applied on start under an advisory lock (safe with many replicas)."""

from __future__ import annotations

import logging

import asyncpg

log = logging.getLogger(__name__)

# Append only: a released migration is never edited.
MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
    CREATE TABLE api_keys (
        id UUID PRIMARY KEY,
        name TEXT NOT NULL,
        owner TEXT NOT NULL DEFAULT '',
        prefix TEXT NOT NULL,
        key_hash BYTEA NOT NULL UNIQUE,
        admin BOOLEAN NOT NULL DEFAULT FALSE,
        priority INTEGER NOT NULL DEFAULT 0,
        allowed_models TEXT[] NOT NULL DEFAULT '{}',
        rpm_limit BIGINT NOT NULL DEFAULT 0,
        tpm_limit BIGINT NOT NULL DEFAULT 0,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        expires_at TIMESTAMPTZ,
        revoked_at TIMESTAMPTZ,
        last_used_at TIMESTAMPTZ
    );
    """,
    ),
    (
        2,
        """
    ALTER TABLE api_keys
        ADD COLUMN description TEXT NOT NULL DEFAULT '',
        ADD COLUMN budget_tokens BIGINT NOT NULL DEFAULT 0,
        ADD COLUMN budget_period TEXT NOT NULL DEFAULT 'month';
    CREATE TABLE key_usage (
        key_id UUID NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
        model TEXT NOT NULL,
        day DATE NOT NULL,
        requests BIGINT NOT NULL DEFAULT 0,
        prompt_tokens BIGINT NOT NULL DEFAULT 0,
        completion_tokens BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (key_id, model, day)
    );
    """,
    ),
    (
        3,
        """
    ALTER TABLE api_keys
        ADD COLUMN scrub_mode TEXT NOT NULL DEFAULT '',
        ADD COLUMN cache_mode TEXT NOT NULL DEFAULT '';
    """,
    ),
]

_LOCK_ID = 0x11A_0001  # arbitrary, constant: the advisory lock guarding migrations


async def migrate(conn: asyncpg.Connection) -> int:
    """Applies pending migrations; returns the schema version now in place."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_ID)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS iir_auth_migrations ("
            " version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM iir_auth_migrations")}
        for version, sql in MIGRATIONS:
            if version in done:
                continue
            log.info("applying auth migration", extra={"version": version})
            await conn.execute(sql)
            await conn.execute("INSERT INTO iir_auth_migrations(version) VALUES ($1)", version)
    return max(v for v, _ in MIGRATIONS)
