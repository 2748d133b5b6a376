"""The audit log: who did what to which key, team or user, with the state before and after."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    before: Any
    after: Any


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value, default=str).decode()


class AuditStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def record(self, actor: str, action: str, target: str, before: Any, after: Any) -> None:
        await self.pool.execute(
            "INSERT INTO audit_log (actor, action, target, before, after) VALUES ($1, $2, $3, $4, $5)",
            actor,
            action,
            target,
            _json(before),
            _json(after),
        )

    async def entries(self, limit: int, target: str = "") -> list[AuditEntry]:
        rows = await self.pool.fetch(
            "SELECT id, at, actor, action, target, before, after FROM audit_log"
            " WHERE ($2 = '' OR target = $2) ORDER BY id DESC LIMIT $1",
            limit,
            target,
        )
        return [
            AuditEntry(
                r["id"],
                r["at"],
                r["actor"],
                r["action"],
                r["target"],
                orjson.loads(r["before"]) if r["before"] is not None else None,
                orjson.loads(r["after"]) if r["after"] is not None else None,
            )
            for r in rows
        ]
