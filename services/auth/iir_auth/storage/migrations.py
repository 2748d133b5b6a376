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
    (
        4,
        """
    CREATE TABLE teams (
        id UUID PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        max_budget DOUBLE PRECISION NOT NULL DEFAULT 0,
        budget_duration TEXT NOT NULL DEFAULT '',
        rpm_limit BIGINT NOT NULL DEFAULT 0,
        tpm_limit BIGINT NOT NULL DEFAULT 0,
        allowed_models TEXT[] NOT NULL DEFAULT '{}',
        metadata JSONB NOT NULL DEFAULT '{}',
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    CREATE TABLE users (
        id TEXT PRIMARY KEY,
        email TEXT NOT NULL DEFAULT '',
        max_budget DOUBLE PRECISION NOT NULL DEFAULT 0,
        budget_duration TEXT NOT NULL DEFAULT '',
        rpm_limit BIGINT NOT NULL DEFAULT 0,
        tpm_limit BIGINT NOT NULL DEFAULT 0,
        metadata JSONB NOT NULL DEFAULT '{}',
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    CREATE TABLE team_members (
        team_id UUID NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        PRIMARY KEY (team_id, user_id)
    );
    ALTER TABLE api_keys
        ADD COLUMN team_id UUID REFERENCES teams(id) ON DELETE RESTRICT,
        ADD COLUMN user_id TEXT REFERENCES users(id) ON DELETE RESTRICT,
        ADD COLUMN max_budget DOUBLE PRECISION NOT NULL DEFAULT 0,
        ADD COLUMN budget_duration TEXT NOT NULL DEFAULT '',
        ADD COLUMN max_parallel_requests INTEGER NOT NULL DEFAULT 0,
        ADD COLUMN metadata JSONB NOT NULL DEFAULT '{}',
        ADD COLUMN blocked BOOLEAN NOT NULL DEFAULT FALSE,
        ADD COLUMN previous_key_hash BYTEA,
        ADD COLUMN previous_valid_until TIMESTAMPTZ;
    CREATE INDEX api_keys_previous_hash ON api_keys (previous_key_hash) WHERE previous_key_hash IS NOT NULL;
    CREATE INDEX api_keys_team ON api_keys (team_id);
    CREATE INDEX api_keys_user ON api_keys (user_id);
    -- One row per answered request; partitioned by month, old partitions dropped for retention.
    CREATE TABLE spend_log (
        at TIMESTAMPTZ NOT NULL,
        request_id TEXT NOT NULL DEFAULT '',
        key_id TEXT NOT NULL,
        user_id TEXT NOT NULL DEFAULT '',
        team_id TEXT NOT NULL DEFAULT '',
        model TEXT NOT NULL,
        answered_by TEXT NOT NULL DEFAULT '',
        provider TEXT NOT NULL DEFAULT '',
        prompt_tokens BIGINT NOT NULL DEFAULT 0,
        cached_tokens BIGINT NOT NULL DEFAULT 0,
        completion_tokens BIGINT NOT NULL DEFAULT 0,
        cost DOUBLE PRECISION NOT NULL DEFAULT 0,
        latency_ms DOUBLE PRECISION NOT NULL DEFAULT 0,
        status INTEGER NOT NULL DEFAULT 200,
        cache_hit BOOLEAN NOT NULL DEFAULT FALSE,
        end_user TEXT NOT NULL DEFAULT '',
        tags JSONB NOT NULL DEFAULT '{}'
    ) PARTITION BY RANGE (at);
    CREATE TABLE audit_log (
        id BIGSERIAL PRIMARY KEY,
        at TIMESTAMPTZ NOT NULL DEFAULT now(),
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        before JSONB,
        after JSONB
    );
    """,
    ),
    (
        5,
        """
    -- The gateway's id for each spend record: a record sent again (a retry after a timeout, a dead
    -- gateway's journal) is stored once. Rows from before have none (NULLs never conflict).
    ALTER TABLE spend_log ADD COLUMN record_id TEXT;
    CREATE UNIQUE INDEX spend_log_record ON spend_log (record_id, at);
    """,
    ),
    (
        6,
        """
    -- SpendSince: what a key, user or team spent since a budget window began (a gateway rebuilding a
    -- budget counter Redis lost), without scanning the month.
    CREATE INDEX spend_log_key_at ON spend_log (key_id, at);
    CREATE INDEX spend_log_user_at ON spend_log (user_id, at);
    CREATE INDEX spend_log_team_at ON spend_log (team_id, at);
    """,
    ),
    (
        7,
        """
    -- The request log is the spend log with each request's details; read newest first, page by page.
    ALTER TABLE spend_log
        ADD COLUMN ttft_ms DOUBLE PRECISION NOT NULL DEFAULT 0,
        ADD COLUMN target TEXT NOT NULL DEFAULT '',
        ADD COLUMN fallbacks TEXT[] NOT NULL DEFAULT '{}',
        ADD COLUMN error_code TEXT NOT NULL DEFAULT '',
        ADD COLUMN operation TEXT NOT NULL DEFAULT '',
        ADD COLUMN stream BOOLEAN NOT NULL DEFAULT FALSE;
    CREATE INDEX spend_log_at ON spend_log (at DESC, record_id DESC);
    CREATE INDEX spend_log_request ON spend_log (request_id);
    """,
    ),
    (
        8,
        """
    -- Budget alerts: percentages of max_budget at which the gateway's webhook is told, once per window.
    ALTER TABLE api_keys ADD COLUMN budget_alert_thresholds DOUBLE PRECISION[] NOT NULL DEFAULT '{}';
    ALTER TABLE teams ADD COLUMN budget_alert_thresholds DOUBLE PRECISION[] NOT NULL DEFAULT '{}';
    """,
    ),
    (
        9,
        """
    -- The request log's bodies, for keys and teams that log them: kept apart, for a shorter time.
    CREATE TABLE request_bodies (
        record_id TEXT PRIMARY KEY,
        at TIMESTAMPTZ NOT NULL,
        request TEXT NOT NULL DEFAULT '',
        response TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX request_bodies_at ON request_bodies (at);
    ALTER TABLE api_keys ADD COLUMN log_bodies BOOLEAN NOT NULL DEFAULT FALSE;
    ALTER TABLE teams ADD COLUMN log_bodies BOOLEAN NOT NULL DEFAULT FALSE;
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
