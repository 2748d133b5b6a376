"""Spend records (one per answered request) in a table partitioned by month, and their sums."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import orjson

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SpendRow:
    at: datetime
    request_id: str
    key_id: str
    user_id: str
    team_id: str
    model: str
    answered_by: str
    provider: str
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    cost: float
    latency_ms: float
    status: int
    cache_hit: bool
    end_user: str
    tags: dict[str, Any]
    record_id: str = ""
    ttft_ms: float = 0.0
    target: str = ""
    fallbacks: tuple[str, ...] = ()
    error_code: str = ""
    operation: str = ""
    stream: bool = False
    request_body: str = ""
    response_body: str = ""


@dataclass(frozen=True, slots=True)
class LogEntry:
    """A request log entry: the spend row, with the names of its key and team and its user's email."""

    row: SpendRow
    key_name: str
    team_name: str
    user_email: str


@dataclass(frozen=True, slots=True)
class LogFilter:
    """What a request log query keeps (empty or 0: anything) and where its page starts."""

    key_id: str = ""
    team_id: str = ""
    user_id: str = ""
    model: str = ""
    status: int = 0
    errors_only: bool = False
    request_id: str = ""
    since: datetime | None = None
    until: datetime | None = None
    after: tuple[datetime, str] | None = None  # the previous page's last entry (time, record id)


@dataclass(frozen=True, slots=True)
class SpendGroup:
    group: str
    name: str
    cost: float
    requests: int
    prompt_tokens: int
    completion_tokens: int


# What each grouping sums by, and the name shown beside the group (group_by is checked against these keys).
_GROUPS = {
    "team": ("s.team_id", "COALESCE(t.name, s.team_id)"),
    "user": ("s.user_id", "COALESCE(NULLIF(u.email, ''), s.user_id)"),
    "key": ("s.key_id", "COALESCE(k.name, s.key_id)"),
    "model": ("s.model", "s.model"),
    "day": ("to_char(s.at AT TIME ZONE 'UTC', 'YYYY-MM-DD')", "to_char(s.at AT TIME ZONE 'UTC', 'YYYY-MM-DD')"),
}
GROUPINGS = tuple(_GROUPS)
# The column naming each kind of budget scope (SpendSince).
_SCOPE_COLUMNS = {"key": "key_id", "user": "user_id", "team": "team_id"}
SCOPE_KINDS = tuple(_SCOPE_COLUMNS)


def _month(moment: datetime) -> date:
    return date(moment.year, moment.month, 1)


def _next_month(first: date) -> date:
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)


_UUID = "'^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'"
# One statement, so the counts follow the rows: records already stored (same record_id and time) are
# skipped, and only the rows stored now add to their key's usage (records without an id come from
# gateways that still send their usage apart) and stamp the key as used.
_INSERT = (
    "WITH new AS ("
    " INSERT INTO spend_log (at, request_id, key_id, user_id, team_id, model, answered_by, provider,"
    " prompt_tokens, cached_tokens, completion_tokens, cost, latency_ms, status, cache_hit, end_user,"
    " tags, record_id, ttft_ms, target, fallbacks, error_code, operation, stream)"
    " SELECT c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15, c16, c17, c18, c19, c20,"
    " CASE WHEN c21 = '' THEN '{}'::text[] ELSE string_to_array(c21, chr(31)) END, c22, c23, c24"
    " FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],"
    " $7::text[], $8::text[], $9::bigint[], $10::bigint[], $11::bigint[], $12::float8[], $13::float8[],"
    " $14::int[], $15::bool[], $16::text[], $17::jsonb[], $18::text[], $19::float8[], $20::text[],"
    " $21::text[], $22::text[], $23::text[], $24::bool[])"
    " AS x(c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15, c16, c17, c18, c19, c20,"
    " c21, c22, c23, c24)"
    " ON CONFLICT DO NOTHING"
    " RETURNING at, key_id, model, prompt_tokens, completion_tokens, status, record_id),"
    " used AS ("
    " INSERT INTO key_usage (key_id, model, day, requests, prompt_tokens, completion_tokens)"
    " SELECT k.id, n.model, (n.at AT TIME ZONE 'UTC')::date, count(*), sum(n.prompt_tokens),"
    " sum(n.completion_tokens)"
    " FROM new n JOIN api_keys k"
    f" ON k.id = CASE WHEN n.key_id ~ {_UUID} THEN n.key_id::uuid END"
    " WHERE n.status = 200 AND n.record_id IS NOT NULL"
    " GROUP BY k.id, n.model, (n.at AT TIME ZONE 'UTC')::date"
    " ON CONFLICT (key_id, model, day) DO UPDATE SET"
    " requests = key_usage.requests + EXCLUDED.requests,"
    " prompt_tokens = key_usage.prompt_tokens + EXCLUDED.prompt_tokens,"
    " completion_tokens = key_usage.completion_tokens + EXCLUDED.completion_tokens"
    " RETURNING key_id),"
    " stamped AS (UPDATE api_keys SET last_used_at = now() WHERE id IN (SELECT key_id FROM used))"
    " SELECT count(*) FROM new"
)


def _columns(rows: Sequence[SpendRow]) -> list[list[Any]]:
    """The rows as one array per column, in the order of `_INSERT`'s parameters."""
    return [
        [r.at for r in rows],
        [r.request_id for r in rows],
        [r.key_id for r in rows],
        [r.user_id for r in rows],
        [r.team_id for r in rows],
        [r.model for r in rows],
        [r.answered_by for r in rows],
        [r.provider for r in rows],
        [r.prompt_tokens for r in rows],
        [r.cached_tokens for r in rows],
        [r.completion_tokens for r in rows],
        [r.cost for r in rows],
        [r.latency_ms for r in rows],
        [r.status for r in rows],
        [r.cache_hit for r in rows],
        [r.end_user for r in rows],
        [orjson.dumps(r.tags).decode() for r in rows],
        [r.record_id or None for r in rows],
        [r.ttft_ms for r in rows],
        [r.target for r in rows],
        ["\x1f".join(r.fallbacks) for r in rows],  # unnest cannot take an array of arrays
        [r.error_code for r in rows],
        [r.operation for r in rows],
        [r.stream for r in rows],
    ]


_BODIES = (
    "INSERT INTO request_bodies (record_id, at, request, response)"
    " SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[]) ON CONFLICT DO NOTHING"
)


class SpendStore:
    def __init__(self, pool: asyncpg.Pool, retention_days: int = 400, body_retention_days: int = 7) -> None:
        self.pool = pool
        self.retention_days = retention_days
        self.body_retention_days = body_retention_days
        self._partitions: set[date] = set()

    async def _ensure_partitions(self, conn: asyncpg.Connection, months: set[date]) -> None:
        for first in sorted(months - self._partitions):
            name = f"spend_log_{first:%Y_%m}"
            # Names and bounds come from dates, never from input.
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF spend_log"
                f" FOR VALUES FROM ('{first.isoformat()}') TO ('{_next_month(first).isoformat()}')"
            )
            self._partitions.add(first)

    async def record(self, rows: Sequence[SpendRow]) -> int:
        """Stores the records not stored yet (by record_id) and adds them to usage; returns how many."""
        if not rows:
            return 0
        async with self.pool.acquire() as conn:
            await self._ensure_partitions(conn, {_month(r.at) for r in rows})
            bodies = [r for r in rows if r.record_id and (r.request_body or r.response_body)]
            if bodies:  # a resent record's bodies are stored once too
                columns = [[r.record_id for r in bodies], [r.at for r in bodies]]
                columns += [[r.request_body for r in bodies], [r.response_body for r in bodies]]
                await conn.execute(_BODIES, *columns)
            try:
                return int(await conn.fetchval(_INSERT, *_columns(rows)))
            except asyncpg.DataError:
                # One bad row must not hold back the batch (the gateway would resend it for ever).
                inserted = 0
                for row in rows:
                    try:
                        inserted += int(await conn.fetchval(_INSERT, *_columns([row])))
                    except asyncpg.DataError as exc:
                        log.warning(
                            "spend record dropped", extra={"request_id": row.request_id, "error": repr(exc)[:200]}
                        )
                return inserted

    async def drop_expired(self, now: datetime | None = None) -> list[str]:
        """Drops the monthly partitions wholly older than the retention; returns their names."""
        cutoff = _month((now or datetime.now(UTC)) - timedelta(days=self.retention_days))
        rows = await self.pool.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'spend_log'"
        )
        dropped = []
        for row in rows:
            name = row["relname"]
            try:
                first = date(int(name[10:14]), int(name[15:17]), 1)
            except ValueError:
                continue
            if _next_month(first) <= cutoff:
                await self.pool.execute(f'DROP TABLE IF EXISTS "{name}"')
                self._partitions.discard(first)
                dropped.append(name)
        if dropped:
            log.info("spend partitions dropped for retention", extra={"partitions": dropped})
        body_cutoff = (now or datetime.now(UTC)) - timedelta(days=self.body_retention_days)
        deleted = await self.pool.execute("DELETE FROM request_bodies WHERE at < $1", body_cutoff)
        if deleted != "DELETE 0":
            log.info("request bodies deleted for retention", extra={"deleted": deleted})
        return dropped

    async def groups(
        self, group_by: str, since: date | None, until: date | None, key_id: str = "", team_id: str = ""
    ) -> list[SpendGroup]:
        column, name = _GROUPS[group_by]
        rows = await self.pool.fetch(
            f"SELECT {column} AS grp, {name} AS name, sum(s.cost) AS cost, count(*) AS requests,"
            " sum(s.prompt_tokens) AS prompt_tokens, sum(s.completion_tokens) AS completion_tokens"
            " FROM spend_log s"
            " LEFT JOIN teams t ON t.id::text = s.team_id"
            " LEFT JOIN users u ON u.id = s.user_id"
            " LEFT JOIN api_keys k ON k.id::text = s.key_id"
            " WHERE ($1::date IS NULL OR s.at >= $1::date)"
            " AND ($2::date IS NULL OR s.at < $2::date + 1)"
            " AND ($3 = '' OR s.key_id = $3) AND ($4 = '' OR s.team_id = $4)"
            f" GROUP BY {column}, {name} ORDER BY {'grp' if group_by == 'day' else 'cost DESC, grp'}",
            since,
            until,
            key_id,
            team_id,
        )
        return [
            SpendGroup(
                r["grp"],
                r["name"],
                float(r["cost"]),
                int(r["requests"]),
                int(r["prompt_tokens"]),
                int(r["completion_tokens"]),
            )
            for r in rows
        ]

    async def spent_since(self, scope_kind: str, scope_id: str, since: datetime) -> tuple[float, int, int]:
        """(USD, prompt plus completion tokens, requests) a key, user or team spent from `since` on: what a
        gateway seeds a budget window's counter with when Redis lost it."""
        column = _SCOPE_COLUMNS[scope_kind]  # checked by the caller; never input in the SQL
        row = await self.pool.fetchrow(
            "SELECT coalesce(sum(cost), 0) AS cost,"
            " coalesce(sum(prompt_tokens + completion_tokens), 0) AS tokens, count(*) AS requests"
            f" FROM spend_log WHERE {column} = $1 AND at >= $2",
            scope_id,
            since,
        )
        return float(row["cost"]), int(row["tokens"]), int(row["requests"])

    async def logs(self, where: LogFilter, limit: int, bodies: bool = False) -> list[LogEntry]:
        """The request log, newest first: at most `limit` entries that `where` keeps (with `bodies`, the
        logged request and answer bodies too)."""
        after_at, after_id = where.after or (None, "")
        rows = await self.pool.fetch(
            "SELECT s.*, coalesce(k.name, '') AS key_name, coalesce(t.name, '') AS team_name,"
            " coalesce(u.email, '') AS user_email,"
            + (
                " coalesce(b.request, '') AS request_body, coalesce(b.response, '') AS response_body"
                if bodies
                else " '' AS request_body, '' AS response_body"
            )
            + " FROM spend_log s"
            + (" LEFT JOIN request_bodies b ON b.record_id = s.record_id" if bodies else "")
            + " LEFT JOIN teams t ON t.id::text = s.team_id"
            " LEFT JOIN users u ON u.id = s.user_id"
            " LEFT JOIN api_keys k ON k.id::text = s.key_id"
            " WHERE ($1 = '' OR s.key_id = $1) AND ($2 = '' OR s.team_id = $2) AND ($3 = '' OR s.user_id = $3)"
            " AND ($4 = '' OR s.model = $4 OR s.answered_by = $4)"
            " AND ($5 = 0 OR s.status = $5) AND (NOT $6 OR s.status <> 200)"
            " AND ($7 = '' OR s.request_id = $7)"
            " AND ($8::timestamptz IS NULL OR s.at >= $8) AND ($9::timestamptz IS NULL OR s.at < $9)"
            " AND ($10::timestamptz IS NULL OR (s.at, coalesce(s.record_id, '')) < ($10, $11))"
            " ORDER BY s.at DESC, coalesce(s.record_id, '') DESC LIMIT $12",
            where.key_id,
            where.team_id,
            where.user_id,
            where.model,
            where.status,
            where.errors_only,
            where.request_id,
            where.since,
            where.until,
            after_at,
            after_id,
            limit,
        )
        return [LogEntry(_spend_row(r), r["key_name"], r["team_name"], r["user_email"]) for r in rows]


def _spend_row(r: Any) -> SpendRow:
    tags = r["tags"]
    return SpendRow(
        at=r["at"],
        request_id=r["request_id"],
        key_id=r["key_id"],
        user_id=r["user_id"],
        team_id=r["team_id"],
        model=r["model"],
        answered_by=r["answered_by"],
        provider=r["provider"],
        prompt_tokens=int(r["prompt_tokens"]),
        cached_tokens=int(r["cached_tokens"]),
        completion_tokens=int(r["completion_tokens"]),
        cost=float(r["cost"]),
        latency_ms=float(r["latency_ms"]),
        status=int(r["status"]),
        cache_hit=bool(r["cache_hit"]),
        end_user=r["end_user"],
        tags=orjson.loads(tags) if isinstance(tags, str) else dict(tags or {}),
        record_id=r["record_id"] or "",
        ttft_ms=float(r["ttft_ms"]),
        target=r["target"],
        fallbacks=tuple(r["fallbacks"] or ()),
        error_code=r["error_code"],
        operation=r["operation"],
        stream=bool(r["stream"]),
        request_body=r["request_body"],
        response_body=r["response_body"],
    )
