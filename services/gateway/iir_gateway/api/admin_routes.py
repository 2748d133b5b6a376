"""Key management: `/api/v1/apikeys` (an admin key; or, where IIR_TRUSTED_NETWORKS is set, no key from
those networks)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import grpc
import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from starlette.responses import Response

from iir.v1 import auth_pb2
from iir_gateway.api.client_address import FORWARDING_HEADERS
from iir_gateway.api.requests import client_ip, read_json_object
from iir_gateway.errors import APIError
from iir_gateway.keys.authenticator import extract_key
from iir_gateway.networks import in_networks
from iir_gateway.principal import Principal
from iir_gateway.runtime import Runtime

router = APIRouter(prefix="/api/v1/apikeys", tags=["API keys"])


# Text without control characters (a NUL cannot be stored, others corrupt logs and terminals).
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
_MAX_LIMIT = 10**12


def _text(max_length: int) -> Any:
    return Annotated[str, StringConstraints(max_length=max_length, pattern=_PRINTABLE)]


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
    expires_at: datetime | None = None
    expires_in_days: float | None = Field(default=None, gt=0, le=36500)
    # Secret scrubbing and response cache for this key ("": the gateway's defaults).
    scrub_mode: Literal["", "redact", "block", "off"] = ""
    cache_mode: Literal["", "on", "off"] = ""


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
    expires_at: datetime | None = None
    expires_in_days: float | None = Field(default=None, gt=0, le=36500)
    scrub_mode: Literal["", "redact", "block", "off"] | None = None
    cache_mode: Literal["", "on", "off"] | None = None


def _iso(seconds: int) -> str | None:
    return datetime.fromtimestamp(seconds, UTC).isoformat() if seconds else None


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
    }


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _from_trusted_network(request: Request, gw: Runtime) -> bool:
    """The TCP peer is in IIR_TRUSTED_NETWORKS and nothing forwarded the request (a proxy's client could be
    anyone, and a forwarded header anything)."""
    if not gw.trusted_networks or any(name in FORWARDING_HEADERS for name, _ in request.scope["headers"]):
        return False
    return in_networks(request.scope.get("iir.peer", ""), gw.trusted_networks)


async def require_admin(request: Request) -> Runtime:
    """An admin key, or no key at all from a trusted network; 401/403 otherwise."""
    gw: Runtime = request.app.state.gateway
    ip = client_ip(request)
    if extract_key(request.headers) is None and _from_trusted_network(request, gw):
        return gw
    principal = await gw.auth.authenticate(request.headers, ip)
    if not principal.admin:
        raise APIError(403, "Managing API keys needs an admin key.", code="admin_required")
    return gw


async def _call(method: Any, message: Any) -> Any:
    try:
        return await method(message, timeout=10)
    except grpc.aio.AioRpcError as exc:
        status = {
            grpc.StatusCode.INVALID_ARGUMENT: 400,
            grpc.StatusCode.NOT_FOUND: 404,
            grpc.StatusCode.FAILED_PRECONDITION: 409,
        }.get(exc.code(), 503)
        code = {400: "invalid_value", 404: "key_not_found", 409: "conflict"}.get(status, "auth_unavailable")
        message = exc.details() if status != 503 else "The authentication service is unavailable."
        raise APIError(status, message or "request failed", code=code) from None


@router.post("", summary="Create a key; its secret is returned once")
async def create_key(request: Request) -> Response:
    gw = await require_admin(request)
    body: CreateKey = _validated(CreateKey, await read_json_object(request, gw.settings.max_body_bytes))
    expires = body.expires_at.timestamp() if body.expires_at else 0
    if expires and expires <= time.time():
        raise APIError(
            400, "Invalid value for 'expires_at': it is in the past.", code="invalid_value", param="expires_at"
        )
    if body.expires_in_days:
        expires = time.time() + body.expires_in_days * 86400
    reply = await _call(
        gw.auth_stub.CreateKey,
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
        ),
    )
    # `api_key` is the onboarding guide's name for the secret; `key` is IIR's.
    return _json({**key_json(reply.info), "key": reply.key, "api_key": reply.key}, status=201)


def _validated(schema: type[BaseModel], body: dict[str, Any]) -> Any:
    try:
        return schema.model_validate(body)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        param = ".".join(str(p) for p in err["loc"])
        raise APIError(400, f"Invalid value for '{param}': {err['msg']}.", code="invalid_value", param=param) from None


@router.patch("/{key_id}", summary="Change a key's settings; its secret stays, every gateway applies it at once")
async def update_key(key_id: str, request: Request) -> Response:
    gw = await require_admin(request)
    raw = await read_json_object(request, gw.settings.max_body_bytes)
    body: UpdateKey = _validated(UpdateKey, raw)
    change = auth_pb2.UpdateKeyRequest(id=key_id)
    for name in ("name", "description", "owner", "priority", "rpm_limit", "tpm_limit", "budget_tokens"):
        if getattr(body, name) is not None:
            setattr(change, name, getattr(body, name))
    for name in ("budget_period", "scrub_mode", "cache_mode"):  # enumerations
        if getattr(body, name) is not None:
            setattr(change, name, getattr(body, name))
    if body.allowed_models is not None:
        change.set_allowed_models = True
        change.allowed_models.extend(body.allowed_models)
    if "expires_at" in raw:
        change.expires_at = int(body.expires_at.timestamp()) if body.expires_at else 0
    if body.expires_in_days:
        change.expires_at = int(time.time() + body.expires_in_days * 86400)
    return _json(key_json(await _call(gw.auth_stub.UpdateKey, change)))


@router.get("", summary="List keys (without secrets)")
async def list_keys(request: Request, include_revoked: bool = False) -> Response:
    gw = await require_admin(request)
    reply = await _call(gw.auth_stub.ListKeys, auth_pb2.ListKeysRequest(include_revoked=include_revoked))
    return _json({"object": "list", "data": [key_json(k) for k in reply.keys]})


@router.get("/{key_id}", summary="One key (without its secret)")
async def get_key(key_id: str, request: Request) -> Response:
    gw = await require_admin(request)
    return _json(key_json(await _call(gw.auth_stub.GetKey, auth_pb2.KeyRef(id=key_id))))


@router.delete("/{key_id}", summary="Revoke a key: every gateway refuses it within a second")
async def revoke_key(key_id: str, request: Request) -> Response:
    gw = await require_admin(request)
    return _json(key_json(await _call(gw.auth_stub.RevokeKey, auth_pb2.KeyRef(id=key_id))))


@router.post("/{key_id}/revoke", summary="Revoke a key (same as DELETE)")
async def revoke_key_post(key_id: str, request: Request) -> Response:
    return await revoke_key(key_id, request)


@router.post("/{key_id}/rotate", summary="Revoke a key and issue its successor with the same settings")
async def rotate_key(key_id: str, request: Request) -> Response:
    gw = await require_admin(request)
    reply = await _call(gw.auth_stub.RotateKey, auth_pb2.KeyRef(id=key_id))
    return _json({**key_json(reply.info), "key": reply.key, "api_key": reply.key, "replaces": key_id}, status=201)


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


@router.get("/{key_id}/usage", summary="Requests and tokens by model and day")
async def key_usage(key_id: str, request: Request, since: str = "", until: str = "") -> Response:
    gw = await require_admin(request)
    reply = await _call(gw.auth_stub.GetUsage, auth_pb2.GetUsageRequest(key_id=key_id, since=since, until=until))
    return _json(_usage_json(key_id, reply))


# Self-service: a key reads its own settings and usage with itself, no admin needed.
self_router = APIRouter(prefix="/api/v1/key", tags=["API keys"])


async def _own_key(request: Request) -> tuple[Runtime, Principal]:
    gw: Runtime = request.app.state.gateway
    return gw, await gw.auth.authenticate(request.headers, client_ip(request))


@self_router.get("/info", summary="The calling key's own settings and limits (without its secret)")
async def own_key_info(request: Request) -> Response:
    gw, principal = await _own_key(request)
    if principal.configured:  # IIR_MASTER_KEY / IIR_ALLOWED_KEYS: no database row
        return _json({"id": principal.key_id, "name": principal.name, "admin": principal.admin, "configured": True})
    return _json(key_json(await _call(gw.auth_stub.GetKey, auth_pb2.KeyRef(id=principal.key_id))))


@self_router.get("/usage", summary="The calling key's own requests and tokens by model and day")
async def own_key_usage(request: Request, since: str = "", until: str = "") -> Response:
    gw, principal = await _own_key(request)
    query = auth_pb2.GetUsageRequest(key_id=principal.key_id, since=since, until=until)
    return _json(_usage_json(principal.key_id, await _call(gw.auth_stub.GetUsage, query)))
