"""The teams and users RPCs of the AuthService (a part of its servicer)."""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
import orjson

from iir.v1 import auth_pb2
from iir_auth.storage.org_store import TEAM_FIELDS, USER_FIELDS, DuplicateName, TeamRecord, UserRecord
from iir_auth.validation import (
    CONTROL,
    alert_threshold_problems,
    alert_thresholds,
    json_object_problem,
    limit_problems,
)

if TYPE_CHECKING:
    from iir_auth.audit import Audited
    from iir_auth.storage.org_store import OrgStore

log = logging.getLogger(__name__)

_USER_ID_MAX = 200


def unix(moment: datetime | None) -> int:
    """Unix seconds of a stored time, 0 for none (as the messages carry times)."""
    return int(moment.timestamp()) if moment else 0


def team_message(t: TeamRecord) -> auth_pb2.Team:
    return auth_pb2.Team(
        id=t.id,
        name=t.name,
        max_budget=t.max_budget,
        budget_duration=t.budget_duration,
        rpm_limit=t.rpm_limit,
        tpm_limit=t.tpm_limit,
        allowed_models=t.allowed_models,
        metadata_json=orjson.dumps(t.metadata).decode(),
        created_at=unix(t.created_at),
        member_ids=t.member_ids,
        budget_alert_thresholds=t.budget_alert_thresholds,
        log_bodies=t.log_bodies,
    )


def user_message(u: UserRecord) -> auth_pb2.User:
    return auth_pb2.User(
        id=u.id,
        email=u.email,
        max_budget=u.max_budget,
        budget_duration=u.budget_duration,
        rpm_limit=u.rpm_limit,
        tpm_limit=u.tpm_limit,
        metadata_json=orjson.dumps(u.metadata).decode(),
        created_at=unix(u.created_at),
        team_ids=u.team_ids,
    )


def scope_of_team(t: TeamRecord) -> auth_pb2.Scope:
    return auth_pb2.Scope(
        kind="team",
        id=t.id,
        name=t.name,
        max_budget=t.max_budget,
        budget_duration=t.budget_duration,
        rpm_limit=t.rpm_limit,
        tpm_limit=t.tpm_limit,
        allowed_models=t.allowed_models,
        created_at=unix(t.created_at),
        budget_alert_thresholds=t.budget_alert_thresholds,
        log_bodies=t.log_bodies,
    )


def scope_of_user(u: UserRecord) -> auth_pb2.Scope:
    return auth_pb2.Scope(
        kind="user",
        id=u.id,
        name=u.email or u.id,
        max_budget=u.max_budget,
        budget_duration=u.budget_duration,
        rpm_limit=u.rpm_limit,
        tpm_limit=u.tpm_limit,
        created_at=unix(u.created_at),
    )


def _team_record(m: auth_pb2.Team) -> TeamRecord:
    return TeamRecord(
        id=m.id,
        name=m.name.strip(),
        max_budget=m.max_budget,
        budget_duration=m.budget_duration,
        rpm_limit=m.rpm_limit,
        tpm_limit=m.tpm_limit,
        allowed_models=list(m.allowed_models),
        metadata=orjson.loads(m.metadata_json) if m.metadata_json else {},
        budget_alert_thresholds=alert_thresholds(m.budget_alert_thresholds),
        log_bodies=m.log_bodies,
    )


def _user_record(m: auth_pb2.User) -> UserRecord:
    return UserRecord(
        id=m.id.strip(),
        email=m.email.strip(),
        max_budget=m.max_budget,
        budget_duration=m.budget_duration,
        rpm_limit=m.rpm_limit,
        tpm_limit=m.tpm_limit,
        metadata=orjson.loads(m.metadata_json) if m.metadata_json else {},
        team_ids=list(dict.fromkeys(m.team_ids)),
    )


def _common_problems(m: Any, texts: list[str]) -> list[str]:
    problems = limit_problems(m)
    if problem := json_object_problem(m.metadata_json):
        problems.append(problem)
    if any(CONTROL.search(t) for t in texts):
        problems.append("names, ids, emails and model patterns must not hold control characters")
    return problems


def _team_problems(m: auth_pb2.Team) -> list[str]:
    problems = _common_problems(m, [m.name, *m.allowed_models]) + alert_threshold_problems(m.budget_alert_thresholds)
    if not m.name.strip() or len(m.name) > 200:
        problems.append("a team needs a name (at most 200 characters)")
    return problems


def _user_problems(m: auth_pb2.User) -> list[str]:
    problems = _common_problems(m, [m.id, m.email])
    if not m.id.strip() or len(m.id) > _USER_ID_MAX or len(m.email) > 320:
        problems.append(f"a user needs an id (at most {_USER_ID_MAX} characters; email at most 320)")
    return problems


def _changed(fields: Any, allowed: tuple[str, ...]) -> list[str]:
    """The fields of an update mask, by their column names; unknown names are an error."""
    wire = {"metadata_json" if n == "metadata" else n for n in allowed}
    unknown = sorted(set(fields) - wire)
    if unknown:
        raise ValueError(f"unknown fields: {', '.join(unknown)}")
    return [f.removesuffix("_json") for f in fields]


class OrgRpcs:
    """Teams and users; mixed into the AuthServicer, which provides the stores and the key events."""

    orgs: OrgStore
    audit: Audited

    async def announce_keys_of(self, team_id: str | None = None, user_id: str | None = None) -> None: ...

    @staticmethod
    async def _invalid(context: grpc.aio.ServicerContext, problems: list[str]) -> None:
        if problems:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "; ".join(problems))

    async def _team(self, team_id: str, context: grpc.aio.ServicerContext) -> TeamRecord:
        team = await self.orgs.team(team_id)
        if team is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no team with id {team_id!r}")
        assert team is not None
        return team

    async def _user(self, user_id: str, context: grpc.aio.ServicerContext) -> UserRecord:
        user = await self.orgs.user(user_id)
        if user is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no user with id {user_id!r}")
        assert user is not None
        return user

    async def CreateTeam(self, request: auth_pb2.Team, context: grpc.aio.ServicerContext) -> auth_pb2.Team:
        await self._invalid(context, _team_problems(request))
        try:
            team = await self.orgs.create_team(_team_record(request))
        except DuplicateName as exc:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, str(exc))
            raise
        await self.audit.record(context, "team.create", f"team:{team.id}", None, dataclasses.asdict(team))
        log.info("team created", extra={"team_id": team.id})
        return team_message(team)

    async def ListTeams(self, request: auth_pb2.ListRequest, context: grpc.aio.ServicerContext) -> auth_pb2.TeamList:
        return auth_pb2.TeamList(teams=[team_message(t) for t in await self.orgs.teams()])

    async def GetTeam(self, request: auth_pb2.KeyRef, context: grpc.aio.ServicerContext) -> auth_pb2.Team:
        return team_message(await self._team(request.id, context))

    async def UpdateTeam(self, request: auth_pb2.UpdateTeamRequest, context: grpc.aio.ServicerContext) -> auth_pb2.Team:
        current = await self._team(request.team.id, context)
        try:
            names = _changed(request.fields, TEAM_FIELDS)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise
        merged = team_message(current)
        for name in request.fields:
            if name in ("allowed_models", "budget_alert_thresholds"):  # repeated: replaced whole
                del getattr(merged, name)[:]
                getattr(merged, name).extend(getattr(request.team, name))
            else:
                setattr(merged, name, getattr(request.team, name))
        await self._invalid(context, _team_problems(merged))
        wanted = _team_record(merged)
        try:
            team = await self.orgs.update_team(current.id, {n: getattr(wanted, n) for n in names})
        except DuplicateName as exc:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, str(exc))
            raise
        assert team is not None
        await self.announce_keys_of(team_id=team.id)
        await self.audit.record(
            context, "team.update", f"team:{team.id}", dataclasses.asdict(current), dataclasses.asdict(team)
        )
        return team_message(team)

    async def DeleteTeam(self, request: auth_pb2.KeyRef, context: grpc.aio.ServicerContext) -> auth_pb2.Team:
        current = await self._team(request.id, context)
        try:
            await self.orgs.delete_team(current.id)
        except asyncpg.ForeignKeyViolationError:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, "the team still has keys: revoke or move them first"
            )
        await self.audit.record(context, "team.delete", f"team:{current.id}", dataclasses.asdict(current), None)
        return team_message(current)

    async def _team_ids_problems(self, team_ids: list[str]) -> list[str]:
        missing = await self.orgs.missing_teams(team_ids)
        return [f"no team with id {', '.join(repr(t) for t in missing)}"] if missing else []

    async def CreateUser(self, request: auth_pb2.User, context: grpc.aio.ServicerContext) -> auth_pb2.User:
        await self._invalid(context, _user_problems(request) or await self._team_ids_problems(list(request.team_ids)))
        try:
            user = await self.orgs.create_user(_user_record(request))
        except DuplicateName as exc:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, str(exc))
            raise
        await self.audit.record(context, "user.create", f"user:{user.id}", None, dataclasses.asdict(user))
        return user_message(user)

    async def ListUsers(self, request: auth_pb2.ListRequest, context: grpc.aio.ServicerContext) -> auth_pb2.UserList:
        return auth_pb2.UserList(users=[user_message(u) for u in await self.orgs.users()])

    async def GetUser(self, request: auth_pb2.KeyRef, context: grpc.aio.ServicerContext) -> auth_pb2.User:
        return user_message(await self._user(request.id, context))

    async def UpdateUser(self, request: auth_pb2.UpdateUserRequest, context: grpc.aio.ServicerContext) -> auth_pb2.User:
        current = await self._user(request.user.id, context)
        try:
            names = _changed(request.fields, (*USER_FIELDS, "team_ids"))
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise
        merged = user_message(current)
        for name in request.fields:
            if name == "team_ids":
                del merged.team_ids[:]
                merged.team_ids.extend(request.user.team_ids)
            else:
                setattr(merged, name, getattr(request.user, name))
        problems = _user_problems(merged) or await self._team_ids_problems(list(merged.team_ids))
        await self._invalid(context, problems)
        wanted = _user_record(merged)
        user = await self.orgs.update_user(current.id, {n: getattr(wanted, n) for n in names})
        assert user is not None
        await self.announce_keys_of(user_id=user.id)
        await self.audit.record(
            context, "user.update", f"user:{user.id}", dataclasses.asdict(current), dataclasses.asdict(user)
        )
        return user_message(user)

    async def DeleteUser(self, request: auth_pb2.KeyRef, context: grpc.aio.ServicerContext) -> auth_pb2.User:
        current = await self._user(request.id, context)
        try:
            await self.orgs.delete_user(current.id)
        except asyncpg.ForeignKeyViolationError:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, "the user still has keys: revoke or move them first"
            )
        await self.audit.record(context, "user.delete", f"user:{current.id}", dataclasses.asdict(current), None)
        return user_message(current)
