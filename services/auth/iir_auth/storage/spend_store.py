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


def _month(moment: datetime) -> date:
    return date(moment.year, moment.month, 1)


def _next_month(first: date) -> date:
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)


_INSERT = (
    "INSERT INTO spend_log (at, request_id, key_id, user_id, team_id, model, answered_by, provider,"
    " prompt_tokens, cached_tokens, completion_tokens, cost, latency_ms, status, cache_hit, end_user,"
    " tags) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
)


def _values(r: SpendRow) -> tuple[Any, ...]:
    return (
        r.at,
        r.request_id,
        r.key_id,
        r.user_id,
        r.team_id,
        r.model,
        r.answered_by,
        r.provider,
        r.prompt_tokens,
        r.cached_tokens,
        r.completion_tokens,
        r.cost,
        r.latency_ms,
        r.status,
        r.cache_hit,
        r.end_user,
        orjson.dumps(r.tags).decode(),
    )


class SpendStore:
    def __init__(self, pool: asyncpg.Pool, retention_days: int = 400) -> None:
        self.pool = pool
        self.retention_days = retention_days
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

    async def record(self, rows: Sequence[SpendRow]) -> None:
        if not rows:
            return
        async with self.pool.acquire() as conn:
            await self._ensure_partitions(conn, {_month(r.at) for r in rows})
            values = [_values(r) for r in rows]
            try:
                await conn.executemany(_INSERT, values)
            except asyncpg.DataError:
                # One bad row must not hold back the batch (the gateway would resend it for ever).
                for value in values:
                    try:
                        await conn.execute(_INSERT, *value)
                    except asyncpg.DataError as exc:
                        log.warning("spend record dropped", extra={"request_id": value[1], "error": repr(exc)[:200]})

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
        return dropped

    async def groups(self, group_by: str, since: date | None, until: date | None, key_id: str = "") -> list[SpendGroup]:
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
            " AND ($3 = '' OR s.key_id = $3)"
            f" GROUP BY {column}, {name} ORDER BY {'grp' if group_by == 'day' else 'cost DESC, grp'}",
            since,
            until,
            key_id,
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
