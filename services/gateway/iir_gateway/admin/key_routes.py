"""Key management: `/api/v1/apikeys` (an admin key; or, where IIR_TRUSTED_NETWORKS is set, no key from
those networks)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Protocol

import orjson
from fastapi import APIRouter, Depends, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from starlette.responses import Response

from iir.v1 import auth_pb2, auth_pb2_grpc
from iir_common.budget_window import window
from iir_gateway.admin.access import Admin, AdminAccess, BodyLimit, call_auth, require_admin, validated
from iir_gateway.batches.store import BatchStore
from iir_gateway.errors import APIError
from iir_gateway.jobs.store import JobStore
from iir_gateway.principal import Principal
from iir_gateway.server.bodies import client_ip, json_response, read_json_object
from iir_gateway.server.docs_routes import ADMIN_ERRORS, body_of

# No id IIR makes or takes is longer (key and team ids are UUIDs, user ids at most 200 characters).
MAX_ID_CHARS = 256


def bounded_ids(request: Request) -> None:
    """404 for an id in the path longer than any id can be, before it reaches auth (whose not-found
    message, quoting a 20,000-character id, would not fit in a gRPC trailer and read as an outage)."""
    if any(len(v) > MAX_ID_CHARS for v in request.path_params.values()):
        raise APIError(404, f"No such id (ids have at most {MAX_ID_CHARS} characters).", code="not_found")


class KeyDeps(AdminAccess, Protocol):
    """What the key routes read of the runtime."""

    @property
    def settings(self) -> BodyLimit: ...
    @property
    def auth_stub(self) -> auth_pb2_grpc.AuthServiceStub: ...
    @property
    def jobs(self) -> JobStore: ...
    @property
    def batches(self) -> BatchStore: ...


# Text without control characters (a NUL cannot be stored, others corrupt logs and terminals).
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
_MAX_LIMIT = 10**12
MAX_BUDGET = 10.0**9
# Budget periods: 30m, 12h, 1d, 7d, 30d..., 1mo, 3mo (from the key's, user's or team's creation), the
# calendar day and month (see iir_common.budget_window), or "" for all time.
DURATION = r"^(|day|month|[1-9][0-9]{0,4}[smhd]|[1-9][0-9]?mo)$"
# Budget alerts: percentages of max_budget at which the gateway's webhook is told, once per window each.
AlertThreshold = Annotated[float, Field(gt=0, le=100)]
MAX_ALERT_THRESHOLDS = 10
MAX_METADATA_BYTES = 16_384


def _expiry(value: datetime) -> datetime:
    """An expiry as an aware time (a time without an offset is UTC) that a Unix timestamp can hold."""
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        seconds = value.timestamp()
        datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, ValueError, OSError):
        raise ValueError("must be a time between 1970 and 9999") from None
    if not 0 < seconds:
        raise ValueError("must be a time between 1970 and 9999")
    return value


Expiry = Annotated[datetime, AfterValidator(_expiry)]


def _text(max_length: int) -> Any:
    return Annotated[str, StringConstraints(max_length=max_length, pattern=_PRINTABLE)]


def metadata_json(value: dict[str, Any] | None) -> str:
    """Metadata as the auth service takes it, or a 400 when it is too big."""
    text = orjson.dumps(value or {}).decode()
    if "\\u0000" in text:  # PostgreSQL's JSONB cannot hold a NUL
        raise APIError(400, "metadata must not hold NUL characters.", code="invalid_value", param="metadata")
    if len(text) > MAX_METADATA_BYTES:
        raise APIError(
            400, f"metadata may hold {MAX_METADATA_BYTES} bytes of JSON.", code="invalid_value", param="metadata"
        )
    return text


class CreateKey(BaseModel):
    """A new key. Limits of 0 mean unlimited; `expires_at` (ISO time) or `expires_in_days`."""

    model_config = ConfigDict(extra="forbid")

    name: _text(200) | None = None  # type: ignore[valid-type]
    description: _text(2000) = ""  # type: ignore[valid-type]
    owner: _text(200) = ""  # type: ignore[valid-type]
    priority: int = Field(default=0, ge=0, le=100)
    admin: bool = False
    allowed_models: list[_text(200)] = Field(default_factory=list, max_length=100)  # type: ignore[valid-type]
    rpm_limit: int = Field(default=0, ge=0, le=_MAX_LIMIT)
    tpm_limit: int = Field(default=0, ge=0, le=_MAX_LIMIT)
    budget_tokens: int = Field(default=0, ge=0, le=_MAX_LIMIT)
    budget_period: Literal["day", "month"] = "month"
    expires_at: Expiry | None = None
    expires_in_days: float | None = Field(default=None, gt=0, le=36500)
    # Secret scrubbing and response cache for this key ("": the gateway's defaults).
    scrub_mode: Literal["", "redact", "block", "off"] = ""
    cache_mode: Literal["", "on", "off"] = ""
    # The team and user the key belongs to; it is bounded by their limits and budgets too.
    team_id: _text(64) = ""  # type: ignore[valid-type]
    user_id: _text(200) = ""  # type: ignore[valid-type]
    # Money (USD) per budget_duration (e.g. "30d"; "" for all time); 0 is unlimited.
    max_budget: float = Field(default=0.0, ge=0, le=MAX_BUDGET)
    budget_duration: Annotated[str, StringConstraints(pattern=DURATION)] = ""
    budget_alert_thresholds: list[AlertThreshold] = Field(default_factory=list, max_length=MAX_ALERT_THRESHOLDS)
    max_parallel_requests: int = Field(default=0, ge=0, le=100_000)
    # Its requests logged with their bodies (scrubbed, cut short) in the request log.
    log_bodies: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict)


class UpdateKey(BaseModel):
    """The settings to change; what is not given stays. `expires_at: null` removes the expiry."""

    model_config = ConfigDict(extra="forbid")

    name: _text(200) | None = None  # type: ignore[valid-type]
    description: _text(2000) | None = None  # type: ignore[valid-type]
    owner: _text(200) | None = None  # type: ignore[valid-type]
    priority: int | None = Field(default=None, ge=0, le=100)
    allowed_models: list[_text(200)] | None = Field(default=None, max_length=100)  # type: ignore[valid-type]
    rpm_limit: int | None = Field(default=None, ge=0, le=_MAX_LIMIT)
    tpm_limit: int | None = Field(default=None, ge=0, le=_MAX_LIMIT)
    budget_tokens: int | None = Field(default=None, ge=0, le=_MAX_LIMIT)
    budget_period: Literal["day", "month"] | None = None
    expires_at: Expiry | None = None
    expires_in_days: float | None = Field(default=None, gt=0, le=36500)
    scrub_mode: Literal["", "redact", "block", "off"] | None = None
    cache_mode: Literal["", "on", "off"] | None = None
    team_id: _text(64) | None = None  # type: ignore[valid-type]
    user_id: _text(200) | None = None  # type: ignore[valid-type]
    max_budget: float | None = Field(default=None, ge=0, le=MAX_BUDGET)
    budget_duration: Annotated[str, StringConstraints(pattern=DURATION)] | None = None
    budget_alert_thresholds: list[AlertThreshold] | None = Field(default=None, max_length=MAX_ALERT_THRESHOLDS)
    max_parallel_requests: int | None = Field(default=None, ge=0, le=100_000)
    log_bodies: bool | None = None
    metadata: dict[str, Any] | None = None


class Regenerate(BaseModel):
    """How long the old secret keeps working, so clients can move to the new one without downtime."""

    model_config = ConfigDict(extra="forbid")
    grace_period_s: int = Field(default=0, ge=0, le=30 * 86400)


def _iso(seconds: int) -> str | None:
    return datetime.fromtimestamp(seconds, UTC).isoformat() if seconds else None


def budget_reset_at(duration: str, created_at: int) -> str | None:
    """When the current window of a budget ends (windows count from the creation); None: never."""
    period = window(duration, time.time(), created_at) if duration else None
    return _iso(period.ends_at) if period is not None and not period.endless else None


def key_json(k: auth_pb2.KeyInfo) -> dict[str, Any]:
    return {
        "id": k.id,
        "name": k.name,
        "description": k.description,
        "owner": k.owner,
        "prefix": k.prefix,
        "admin": k.admin,
        "priority": k.priority,
        "allowed_models": list(k.allowed_models),
        "rpm_limit": k.rpm_limit,
        "tpm_limit": k.tpm_limit,
        "budget_tokens": k.budget_tokens,
        "budget_period": k.budget_period,
        "expires_at": _iso(k.expires_at),
        "created_at": _iso(k.created_at),
        "last_used_at": _iso(k.last_used_at),
        "revoked_at": _iso(k.revoked_at),
        "scrub_mode": k.scrub_mode,
        "cache_mode": k.cache_mode,
        "team_id": k.team_id or None,
        "user_id": k.user_id or None,
        "max_budget": k.max_budget,
        "budget_duration": k.budget_duration,
        "budget_reset_at": budget_reset_at(k.budget_duration, k.created_at),
        "budget_alert_thresholds": list(k.budget_alert_thresholds),
        "log_bodies": k.log_bodies,
        "max_parallel_requests": k.max_parallel_requests,
        "blocked": k.blocked,
        "metadata": orjson.loads(k.metadata_json) if k.metadata_json else {},
        "previous_secret_valid_until": _iso(k.previous_valid_until),
    }


def _usage_json(key_id: str, reply: auth_pb2.GetUsageResponse) -> dict[str, Any]:
    rows = [
        {
            "day": r.day,
            "model": r.model,
            "requests": r.requests,
            "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens,
            "total_tokens": r.prompt_tokens + r.completion_tokens,
        }
        for r in reply.records
    ]
    totals = {k: sum(r[k] for r in rows) for k in ("requests", "prompt_tokens", "completion_tokens", "total_tokens")}
    return {"key_id": key_id, "data": rows, "totals": totals}


def router(deps: KeyDeps) -> APIRouter:
    """Key management (admin), and a key's own settings and usage."""
    keys = APIRouter(
        prefix="/api/v1/apikeys", tags=["API keys"], responses=ADMIN_ERRORS, dependencies=[Depends(bounded_ids)]
    )
    own = APIRouter(prefix="/api/v1/key", tags=["API keys"])

    async def admitted(request: Request, key_id: str) -> Admin:
        """An admin for key `key_id`: a team admin only for its team's keys (another's: 404, as unknown)."""
        admin = await require_admin(request, deps, team_scope=True)
        if admin.team_id:
            info = await admin.call(deps.auth_stub.GetKey, auth_pb2.KeyRef(id=key_id))
            if info.team_id != admin.team_id:
                raise APIError(404, f"No API key with id `{key_id}`.", code="key_not_found")
        return admin

    @keys.post(
        "", summary="Create a key; its secret is returned once", status_code=201, openapi_extra=body_of(CreateKey)
    )
    async def create_key(request: Request) -> Response:
        admin = await require_admin(request, deps, team_scope=True)
        body: CreateKey = validated(CreateKey, await read_json_object(request, deps.settings.max_body_bytes))
        if admin.team_id:  # a team admin makes keys of its team, never an admin key
            if body.admin or body.team_id not in ("", admin.team_id):
                raise APIError(403, "A team admin creates its own team's plain keys only.", code="admin_required")
            body.team_id = admin.team_id
        expires = body.expires_at.timestamp() if body.expires_at else 0
        if expires and expires <= time.time():
            raise APIError(
                400, "Invalid value for 'expires_at': it is in the past.", code="invalid_value", param="expires_at"
            )
        if body.expires_in_days:
            expires = time.time() + body.expires_in_days * 86400
        reply = await admin.call(
            deps.auth_stub.CreateKey,
            auth_pb2.CreateKeyRequest(
                name=body.name or body.description[:60] or "key",
                owner=body.owner,
                description=body.description,
                admin=body.admin,
                priority=body.priority,
                allowed_models=body.allowed_models,
                rpm_limit=body.rpm_limit,
                tpm_limit=body.tpm_limit,
                budget_tokens=body.budget_tokens,
                budget_period=body.budget_period,
                expires_at=int(expires),
                scrub_mode=body.scrub_mode,
                cache_mode=body.cache_mode,
                team_id=body.team_id,
                user_id=body.user_id,
                max_budget=body.max_budget,
                budget_duration=body.budget_duration,
                max_parallel_requests=body.max_parallel_requests,
                metadata_json=metadata_json(body.metadata),
                budget_alert_thresholds=body.budget_alert_thresholds,
                log_bodies=body.log_bodies,
            ),
        )
        # `api_key` is the onboarding guide's name for the secret; `key` is IIR's.
        return json_response({**key_json(reply.info), "key": reply.key, "api_key": reply.key}, status=201)

    @keys.patch(
        "/{key_id}",
        summary="Change a key's settings; its secret stays, every gateway applies it at once",
        openapi_extra=body_of(UpdateKey),
    )
    async def update_key(key_id: str, request: Request) -> Response:
        admin = await admitted(request, key_id)
        raw = await read_json_object(request, deps.settings.max_body_bytes)
        body: UpdateKey = validated(UpdateKey, raw)
        if admin.team_id and body.team_id not in (None, admin.team_id):
            raise APIError(403, "A team admin cannot move a key to another team.", code="admin_required")
        change = auth_pb2.UpdateKeyRequest(id=key_id)
        for name in (
            "name",
            "description",
            "owner",
            "priority",
            "rpm_limit",
            "tpm_limit",
            "budget_tokens",
            "budget_period",
            "scrub_mode",
            "cache_mode",
            "team_id",
            "user_id",
            "max_budget",
            "budget_duration",
            "max_parallel_requests",
            "log_bodies",
        ):
            if getattr(body, name) is not None:
                setattr(change, name, getattr(body, name))
        if body.metadata is not None:
            change.metadata_json = metadata_json(body.metadata)
        if body.budget_alert_thresholds is not None:
            change.set_budget_alert_thresholds = True
            change.budget_alert_thresholds.extend(body.budget_alert_thresholds)
        if body.allowed_models is not None:
            change.set_allowed_models = True
            change.allowed_models.extend(body.allowed_models)
        if "expires_at" in raw:
            change.expires_at = int(body.expires_at.timestamp()) if body.expires_at else 0
        if body.expires_in_days:
            change.expires_at = int(time.time() + body.expires_in_days * 86400)
        return json_response(key_json(await admin.call(deps.auth_stub.UpdateKey, change)))

    @keys.get("", summary="List keys (without secrets)")
    async def list_keys(request: Request, include_revoked: bool = False) -> Response:
        admin = await require_admin(request, deps, team_scope=True)
        reply = await admin.call(deps.auth_stub.ListKeys, auth_pb2.ListKeysRequest(include_revoked=include_revoked))
        shown = [k for k in reply.keys if not admin.team_id or k.team_id == admin.team_id]
        return json_response({"object": "list", "data": [key_json(k) for k in shown]})

    @keys.get("/{key_id}", summary="One key (without its secret)")
    async def get_key(key_id: str, request: Request) -> Response:
        admin = await admitted(request, key_id)
        return json_response(key_json(await admin.call(deps.auth_stub.GetKey, auth_pb2.KeyRef(id=key_id))))

    @keys.delete("/{key_id}", summary="Revoke a key: every gateway refuses it within a second")
    async def revoke_key(key_id: str, request: Request) -> Response:
        admin = await admitted(request, key_id)
        return json_response(key_json(await admin.call(deps.auth_stub.RevokeKey, auth_pb2.KeyRef(id=key_id))))

    @keys.post("/{key_id}/revoke", summary="Revoke a key (same as DELETE)")
    async def revoke_key_post(key_id: str, request: Request) -> Response:
        return await revoke_key(key_id, request)

    @keys.post(
        "/{key_id}/rotate", summary="Revoke a key and issue its successor with the same settings", status_code=201
    )
    async def rotate_key(key_id: str, request: Request) -> Response:
        admin = await admitted(request, key_id)
        reply = await admin.call(deps.auth_stub.RotateKey, auth_pb2.KeyRef(id=key_id))
        return json_response(
            {**key_json(reply.info), "key": reply.key, "api_key": reply.key, "replaces": key_id}, status=201
        )

    @keys.post(
        "/{key_id}/regenerate",
        summary="A new secret for the same key (same id, settings and spend); the old one works for grace_period_s",
        status_code=201,
        openapi_extra=body_of(Regenerate),
    )
    async def regenerate_key(key_id: str, request: Request) -> Response:
        admin = await admitted(request, key_id)
        raw = await read_json_object(request, deps.settings.max_body_bytes, optional=True)
        body: Regenerate = validated(Regenerate, raw)
        message = auth_pb2.RegenerateKeyRequest(id=key_id, grace_period_s=body.grace_period_s)
        reply = await admin.call(deps.auth_stub.RegenerateKey, message)
        return json_response({**key_json(reply.info), "key": reply.key, "api_key": reply.key}, status=201)

    async def _set_blocked(key_id: str, request: Request, blocked: bool) -> Response:
        admin = await admitted(request, key_id)
        change = auth_pb2.UpdateKeyRequest(id=key_id, blocked=blocked)
        return json_response(key_json(await admin.call(deps.auth_stub.UpdateKey, change)))

    @keys.post("/{key_id}/block", summary="Refuse a key until it is unblocked (every gateway, at once)")
    async def block_key(key_id: str, request: Request) -> Response:
        return await _set_blocked(key_id, request, True)

    @keys.post("/{key_id}/unblock", summary="Accept a blocked key again")
    async def unblock_key(key_id: str, request: Request) -> Response:
        return await _set_blocked(key_id, request, False)

    @keys.get("/{key_id}/usage", summary="Requests and tokens by model and day")
    async def key_usage(key_id: str, request: Request, since: str = "", until: str = "") -> Response:
        admin = await admitted(request, key_id)
        query = auth_pb2.GetUsageRequest(key_id=key_id, since=since, until=until)
        reply = await admin.call(deps.auth_stub.GetUsage, query)
        return json_response(_usage_json(key_id, reply))

    @keys.get("/{key_id}/jobs", summary="The key's async jobs (kept ones, newest first) and batches")
    async def key_jobs(key_id: str, request: Request) -> Response:
        admin = await require_admin(request, deps)
        info = await admin.call(deps.auth_stub.GetKey, auth_pb2.KeyRef(id=key_id))  # 404 for an unknown key
        owner = Principal(info.id, info.name, False, 0, ())
        batches, _ = await deps.batches.list(owner, None, 100)
        jobs = [job.public() for job in await deps.jobs.of_owner(info.id)]
        return json_response({"key_id": info.id, "jobs": jobs, "batches": batches})

    # Self-service: a key reads its own settings and usage with itself, no admin needed.
    async def _own_key(request: Request) -> Principal:
        return await deps.auth.authenticate(request.headers, client_ip(request))

    @own.get("/info", summary="The calling key's own settings and limits (without its secret)")
    async def own_key_info(request: Request) -> Response:
        principal = await _own_key(request)
        if principal.configured:  # IIR_MASTER_KEY / IIR_ALLOWED_KEYS: no database row
            return json_response(
                {"id": principal.key_id, "name": principal.name, "admin": principal.admin, "configured": True}
            )
        return json_response(key_json(await call_auth(deps.auth_stub.GetKey, auth_pb2.KeyRef(id=principal.key_id))))

    @own.get("/usage", summary="The calling key's own requests and tokens by model and day")
    async def own_key_usage(request: Request, since: str = "", until: str = "") -> Response:
        principal = await _own_key(request)
        query = auth_pb2.GetUsageRequest(key_id=principal.key_id, since=since, until=until)
        return json_response(_usage_json(principal.key_id, await call_auth(deps.auth_stub.GetUsage, query)))

    routes = APIRouter()
    routes.include_router(keys)
    routes.include_router(own)
    return routes
