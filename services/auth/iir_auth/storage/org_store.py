"""Teams and users in PostgreSQL: the owners keys belong to, with their own limits and budgets."""

from __future__ import annotations

import builtins
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson


@dataclass(frozen=True)
class TeamRecord:
    id: str
    name: str
    max_budget: float = 0.0
    budget_duration: str = ""
    rpm_limit: int = 0
    tpm_limit: int = 0
    allowed_models: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    member_ids: list[str] = field(default_factory=list)
    # Percentages of max_budget at which the gateway's budget alert webhook is told (once per window each).
    budget_alert_thresholds: list[float] = field(default_factory=list)
    log_bodies: bool = False  # its keys' requests are logged with their bodies


@dataclass(frozen=True)
class UserRecord:
    id: str
    email: str = ""
    max_budget: float = 0.0
    budget_duration: str = ""
    rpm_limit: int = 0
    tpm_limit: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    team_ids: list[str] = field(default_factory=list)


TEAM_FIELDS = (
    "name",
    "max_budget",
    "budget_duration",
    "rpm_limit",
    "tpm_limit",
    "allowed_models",
    "metadata",
    "budget_alert_thresholds",
    "log_bodies",
)
USER_FIELDS = ("email", "max_budget", "budget_duration", "rpm_limit", "tpm_limit", "metadata")

_TEAM = (
    "t.id, t.name, t.max_budget, t.budget_duration, t.rpm_limit, t.tpm_limit, t.allowed_models, t.metadata,"
    " t.created_at, t.budget_alert_thresholds, t.log_bodies,"
    " COALESCE((SELECT array_agg(m.user_id ORDER BY m.user_id) FROM team_members m"
    " WHERE m.team_id = t.id), '{}') AS member_ids"
)
_USER = (
    "u.id, u.email, u.max_budget, u.budget_duration, u.rpm_limit, u.tpm_limit, u.metadata, u.created_at,"
    " COALESCE((SELECT array_agg(m.team_id::text ORDER BY m.team_id) FROM team_members m"
    " WHERE m.user_id = u.id), '{}') AS team_ids"
)


def _team(row: asyncpg.Record) -> TeamRecord:
    data = dict(row)
    return TeamRecord(
        **{
            **data,
            "id": str(row["id"]),
            "allowed_models": list(row["allowed_models"]),
            "metadata": orjson.loads(row["metadata"]),
            "member_ids": list(row["member_ids"]),
            "budget_alert_thresholds": list(row["budget_alert_thresholds"]),
        }
    )


def _user(row: asyncpg.Record) -> UserRecord:
    return UserRecord(**{**dict(row), "metadata": orjson.loads(row["metadata"]), "team_ids": list(row["team_ids"])})


def _column(name: str, value: Any) -> Any:
    """A value as its column takes it (JSONB as text)."""
    return orjson.dumps(value).decode() if name == "metadata" else value


def _ident(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


class DuplicateName(Exception):
    """A team with that name, or a user with that id, exists already."""


class OrgStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def create_team(self, team: TeamRecord) -> TeamRecord:
        try:
            row = await self.pool.fetchrow(
                "INSERT INTO teams (id, name, max_budget, budget_duration, rpm_limit, tpm_limit, allowed_models,"
                " metadata, budget_alert_thresholds, log_bodies) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                " RETURNING id",
                uuid.uuid4(),
                team.name,
                team.max_budget,
                team.budget_duration,
                team.rpm_limit,
                team.tpm_limit,
                team.allowed_models,
                _column("metadata", team.metadata),
                team.budget_alert_thresholds,
                team.log_bodies,
            )
        except asyncpg.UniqueViolationError:
            raise DuplicateName(f"a team named {team.name!r} exists already") from None
        created = await self.team(str(row["id"]))
        assert created is not None
        return created

    async def team(self, team_id: str) -> TeamRecord | None:
        ident = _ident(team_id)
        if ident is None:
            return None
        row = await self.pool.fetchrow(f"SELECT {_TEAM} FROM teams t WHERE t.id = $1", ident)
        return _team(row) if row else None

    async def teams(self) -> builtins.list[TeamRecord]:
        return [_team(r) for r in await self.pool.fetch(f"SELECT {_TEAM} FROM teams t ORDER BY t.name")]

    async def update_team(self, team_id: str, changes: dict[str, Any]) -> TeamRecord | None:
        ident = _ident(team_id)
        names = [n for n in changes if n in TEAM_FIELDS]  # never an unknown column in the SQL
        if ident is None:
            return None
        if names:
            sets = ", ".join(f"{n} = ${i}" for i, n in enumerate(names, 2))
            try:
                await self.pool.execute(
                    f"UPDATE teams SET {sets} WHERE id = $1", ident, *(_column(n, changes[n]) for n in names)
                )
            except asyncpg.UniqueViolationError:
                raise DuplicateName(f"a team named {changes['name']!r} exists already") from None
        return await self.team(team_id)

    async def delete_team(self, team_id: str) -> TeamRecord | None:
        """Deletes a team that no live key belongs to (revoked keys are detached)."""
        team = await self.team(team_id)
        if team is None:
            return None
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE api_keys SET team_id = NULL WHERE team_id = $1 AND revoked_at IS NOT NULL", uuid.UUID(team.id)
            )
            await conn.execute("DELETE FROM teams WHERE id = $1", uuid.UUID(team.id))
        return team

    async def create_user(self, user: UserRecord) -> UserRecord:
        async with self.pool.acquire() as conn, conn.transaction():
            try:
                await conn.execute(
                    "INSERT INTO users (id, email, max_budget, budget_duration, rpm_limit, tpm_limit, metadata)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    user.id,
                    user.email,
                    user.max_budget,
                    user.budget_duration,
                    user.rpm_limit,
                    user.tpm_limit,
                    _column("metadata", user.metadata),
                )
            except asyncpg.UniqueViolationError:
                raise DuplicateName(f"a user with id {user.id!r} exists already") from None
            await self._set_teams(conn, user.id, user.team_ids)
        created = await self.user(user.id)
        assert created is not None
        return created

    @staticmethod
    async def _set_teams(conn: asyncpg.Connection, user_id: str, team_ids: builtins.list[str]) -> None:
        await conn.execute("DELETE FROM team_members WHERE user_id = $1", user_id)
        await conn.execute(
            "INSERT INTO team_members (team_id, user_id) SELECT unnest($1::uuid[]), $2",
            [uuid.UUID(t) for t in team_ids],
            user_id,
        )

    async def user(self, user_id: str) -> UserRecord | None:
        row = await self.pool.fetchrow(f"SELECT {_USER} FROM users u WHERE u.id = $1", user_id)
        return _user(row) if row else None

    async def users(self) -> builtins.list[UserRecord]:
        return [_user(r) for r in await self.pool.fetch(f"SELECT {_USER} FROM users u ORDER BY u.id")]

    async def update_user(self, user_id: str, changes: dict[str, Any]) -> UserRecord | None:
        if await self.user(user_id) is None:
            return None
        names = [n for n in changes if n in USER_FIELDS]
        async with self.pool.acquire() as conn, conn.transaction():
            if names:
                sets = ", ".join(f"{n} = ${i}" for i, n in enumerate(names, 2))
                await conn.execute(
                    f"UPDATE users SET {sets} WHERE id = $1", user_id, *(_column(n, changes[n]) for n in names)
                )
            if "team_ids" in changes:
                await self._set_teams(conn, user_id, changes["team_ids"])
        return await self.user(user_id)

    async def delete_user(self, user_id: str) -> UserRecord | None:
        user = await self.user(user_id)
        if user is None:
            return None
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE api_keys SET user_id = NULL WHERE user_id = $1 AND revoked_at IS NOT NULL", user_id
            )
            await conn.execute("DELETE FROM users WHERE id = $1", user_id)
        return user

    async def missing_teams(self, team_ids: builtins.list[str]) -> builtins.list[str]:
        """The ids among `team_ids` that name no team."""
        idents = [_ident(t) for t in team_ids]
        known = {
            str(r["id"])
            for r in await self.pool.fetch(
                "SELECT id FROM teams WHERE id = ANY($1::uuid[])", [i for i in idents if i is not None]
            )
        }
        return [t for t, i in zip(team_ids, idents, strict=True) if i is None or str(i) not in known]
