"""Teams and users: `/api/v1/teams` and `/api/v1/users` (admin). A key of a team or user is bounded by
their limits, allowed models and money budgets as well as its own."""

from __future__ import annotations

import secrets
from typing import Annotated, Any, Protocol

import orjson
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.responses import Response

from iir.v1 import auth_pb2, auth_pb2_grpc
from iir_gateway.admin.access import AdminAccess, BodyLimit, require_admin, validated
from iir_gateway.admin.key_routes import (
    _MAX_LIMIT,
    DURATION,
    MAX_ALERT_THRESHOLDS,
    MAX_BUDGET,
    AlertThreshold,
    _iso,
    _text,
    bounded_ids,
    budget_reset_at,
    metadata_json,
)
from iir_gateway.server.bodies import json_response, read_json_object
from iir_gateway.server.docs_routes import ADMIN_ERRORS, body_of

_IDS = [Depends(bounded_ids)]  # 404 for an id longer than any can be
_Duration = Annotated[str, StringConstraints(pattern=DURATION)]


class OrgDeps(AdminAccess, Protocol):
    """What the team and user routes read of the runtime."""

    @property
    def settings(self) -> BodyLimit: ...
    @property
    def auth_stub(self) -> auth_pb2_grpc.AuthServiceStub: ...


class _Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Money (USD) per budget_duration ("30d", "7d", "1d", "12h"; "" for all time); 0 is unlimited.
    max_budget: float = Field(default=0.0, ge=0, le=MAX_BUDGET)
    budget_duration: _Duration = ""
    rpm_limit: int = Field(default=0, ge=0, le=_MAX_LIMIT)
    tpm_limit: int = Field(default=0, ge=0, le=_MAX_LIMIT)
    metadata: dict[str, Any] = Field(default_factory=dict)


class CreateTeam(_Limits):
    """A team. Its limits are shared by all its keys together; `allowed_models` bounds each of them."""

    name: _text(200)  # type: ignore[valid-type]
    allowed_models: list[_text(200)] = Field(default_factory=list, max_length=100)  # type: ignore[valid-type]
    # Percentages of max_budget at which the gateway's budget alert webhook is told, once per window each.
    budget_alert_thresholds: list[AlertThreshold] = Field(default_factory=list, max_length=MAX_ALERT_THRESHOLDS)
    # Its keys' requests logged with their bodies (scrubbed, cut short) in the request log.
    log_bodies: bool = False


class UpdateTeam(BaseModel):
    """The team's settings to change; what is not given stays."""

    model_config = ConfigDict(extra="forbid")
    name: _text(200) | None = None  # type: ignore[valid-type]
    max_budget: float | None = Field(default=None, ge=0, le=MAX_BUDGET)
    budget_duration: _Duration | None = None
    rpm_limit: int | None = Field(default=None, ge=0, le=_MAX_LIMIT)
    tpm_limit: int | None = Field(default=None, ge=0, le=_MAX_LIMIT)
    allowed_models: list[_text(200)] | None = Field(default=None, max_length=100)  # type: ignore[valid-type]
    budget_alert_thresholds: list[AlertThreshold] | None = Field(default=None, max_length=MAX_ALERT_THRESHOLDS)
    log_bodies: bool | None = None
    metadata: dict[str, Any] | None = None


class CreateUser(_Limits):
    """A user: an id of yours (an email or an identity provider's id; made up when not given)."""

    id: _text(200) | None = None  # type: ignore[valid-type]
    email: _text(320) = ""  # type: ignore[valid-type]
    team_ids: list[_text(64)] = Field(default_factory=list, max_length=100)  # type: ignore[valid-type]


class UpdateUser(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: _text(320) | None = None  # type: ignore[valid-type]
    max_budget: float | None = Field(default=None, ge=0, le=MAX_BUDGET)
    budget_duration: _Duration | None = None
    rpm_limit: int | None = Field(default=None, ge=0, le=_MAX_LIMIT)
    tpm_limit: int | None = Field(default=None, ge=0, le=_MAX_LIMIT)
    team_ids: list[_text(64)] | None = Field(default=None, max_length=100)  # type: ignore[valid-type]
    metadata: dict[str, Any] | None = None


def team_json(t: auth_pb2.Team) -> dict[str, Any]:
    return {
        "id": t.id,
        "object": "team",
        "name": t.name,
        "max_budget": t.max_budget,
        "budget_duration": t.budget_duration,
        "rpm_limit": t.rpm_limit,
        "tpm_limit": t.tpm_limit,
        "allowed_models": list(t.allowed_models),
        "budget_reset_at": budget_reset_at(t.budget_duration, t.created_at),
        "budget_alert_thresholds": list(t.budget_alert_thresholds),
        "log_bodies": t.log_bodies,
        "metadata": orjson.loads(t.metadata_json) if t.metadata_json else {},
        "members": list(t.member_ids),
        "created_at": _iso(t.created_at),
    }


def user_json(u: auth_pb2.User) -> dict[str, Any]:
    return {
        "id": u.id,
        "object": "user",
        "email": u.email,
        "max_budget": u.max_budget,
        "budget_duration": u.budget_duration,
        "rpm_limit": u.rpm_limit,
        "tpm_limit": u.tpm_limit,
        "budget_reset_at": budget_reset_at(u.budget_duration, u.created_at),
        "team_ids": list(u.team_ids),
        "metadata": orjson.loads(u.metadata_json) if u.metadata_json else {},
        "created_at": _iso(u.created_at),
    }


def _fill(message: Any, body: BaseModel) -> list[str]:
    """Copies the given fields of `body` into `message`; returns their names (the update mask)."""
    fields = []
    for name, value in body.model_dump(exclude_none=True).items():
        if name == "metadata":
            message.metadata_json = metadata_json(value)
            fields.append("metadata_json")
        elif isinstance(value, list):
            getattr(message, name).extend(value)
            fields.append(name)
        else:
            setattr(message, name, value)
            fields.append(name)
    return fields


def router(deps: OrgDeps) -> APIRouter:
    """Teams and users (admin)."""
    teams = APIRouter(prefix="/api/v1/teams", tags=["Teams and users"], responses=ADMIN_ERRORS, dependencies=_IDS)
    users = APIRouter(prefix="/api/v1/users", tags=["Teams and users"], responses=ADMIN_ERRORS, dependencies=_IDS)

    @teams.post("", summary="Create a team", status_code=201, openapi_extra=body_of(CreateTeam))
    async def create_team(request: Request) -> Response:
        admin = await require_admin(request, deps)
        body: CreateTeam = validated(CreateTeam, await read_json_object(request, deps.settings.max_body_bytes))
        message = auth_pb2.Team()
        _fill(message, body)
        return json_response(team_json(await admin.call(deps.auth_stub.CreateTeam, message)), status=201)

    @teams.get("", summary="List teams")
    async def list_teams(request: Request) -> Response:
        admin = await require_admin(request, deps, team_scope=True)  # a team admin: its own team
        reply = await admin.call(deps.auth_stub.ListTeams, auth_pb2.ListRequest())
        shown = [t for t in reply.teams if not admin.team_id or t.id == admin.team_id]
        return json_response({"object": "list", "data": [team_json(t) for t in shown]})

    @teams.get("/{team_id}", summary="One team, with its members")
    async def get_team(team_id: str, request: Request) -> Response:
        admin = await require_admin(request, deps)
        return json_response(team_json(await admin.call(deps.auth_stub.GetTeam, auth_pb2.KeyRef(id=team_id))))

    @teams.patch(
        "/{team_id}", summary="Change a team; its keys see the change at once", openapi_extra=body_of(UpdateTeam)
    )
    async def update_team(team_id: str, request: Request) -> Response:
        admin = await require_admin(request, deps)
        body: UpdateTeam = validated(UpdateTeam, await read_json_object(request, deps.settings.max_body_bytes))
        message = auth_pb2.Team(id=team_id)
        fields = _fill(message, body)
        change = auth_pb2.UpdateTeamRequest(team=message, fields=fields)
        return json_response(team_json(await admin.call(deps.auth_stub.UpdateTeam, change)))

    @teams.delete("/{team_id}", summary="Delete a team that has no live keys (409 otherwise)")
    async def delete_team(team_id: str, request: Request) -> Response:
        admin = await require_admin(request, deps)
        reply = await admin.call(deps.auth_stub.DeleteTeam, auth_pb2.KeyRef(id=team_id))
        return json_response({**team_json(reply), "deleted": True})

    @users.post("", summary="Create a user", status_code=201, openapi_extra=body_of(CreateUser))
    async def create_user(request: Request) -> Response:
        admin = await require_admin(request, deps)
        body: CreateUser = validated(CreateUser, await read_json_object(request, deps.settings.max_body_bytes))
        if not body.id:
            body.id = body.email or f"user-{secrets.token_hex(8)}"
        message = auth_pb2.User()
        _fill(message, body)
        return json_response(user_json(await admin.call(deps.auth_stub.CreateUser, message)), status=201)

    @users.get("", summary="List users")
    async def list_users(request: Request) -> Response:
        admin = await require_admin(request, deps)
        reply = await admin.call(deps.auth_stub.ListUsers, auth_pb2.ListRequest())
        return json_response({"object": "list", "data": [user_json(u) for u in reply.users]})

    @users.get("/{user_id}", summary="One user, with their teams")
    async def get_user(user_id: str, request: Request) -> Response:
        admin = await require_admin(request, deps)
        return json_response(user_json(await admin.call(deps.auth_stub.GetUser, auth_pb2.KeyRef(id=user_id))))

    @users.patch(
        "/{user_id}",
        summary="Change a user (`team_ids` replaces their memberships)",
        openapi_extra=body_of(UpdateUser),
    )
    async def update_user(user_id: str, request: Request) -> Response:
        admin = await require_admin(request, deps)
        body: UpdateUser = validated(UpdateUser, await read_json_object(request, deps.settings.max_body_bytes))
        message = auth_pb2.User(id=user_id)
        fields = _fill(message, body)
        change = auth_pb2.UpdateUserRequest(user=message, fields=fields)
        return json_response(user_json(await admin.call(deps.auth_stub.UpdateUser, change)))

    @users.delete("/{user_id}", summary="Delete a user who has no live keys (409 otherwise)")
    async def delete_user(user_id: str, request: Request) -> Response:
        admin = await require_admin(request, deps)
        reply = await admin.call(deps.auth_stub.DeleteUser, auth_pb2.KeyRef(id=user_id))
        return json_response({**user_json(reply), "deleted": True})

    routes = APIRouter()
    routes.include_router(teams)
    routes.include_router(users)
    return routes
