"""Who may manage keys, teams, users and spend (an admin key; or, where IIR_TRUSTED_NETWORKS is set, no key
from those networks), and calling the auth service on their behalf."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
import orjson
from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from iir_gateway.api.client_address import FORWARDING_HEADERS
from iir_gateway.api.requests import client_ip
from iir_gateway.errors import APIError
from iir_gateway.keys.authenticator import extract_key
from iir_gateway.networks import in_networks
from iir_gateway.runtime import Runtime

_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_value"),
    grpc.StatusCode.NOT_FOUND: (404, "not_found"),
    grpc.StatusCode.FAILED_PRECONDITION: (409, "conflict"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "already_exists"),
}


async def call_auth(method: Any, message: Any, actor: str = "") -> Any:
    """An auth service call; its failures as OpenAI-shaped errors (503 when the service is away)."""
    try:
        return await method(message, timeout=10, metadata=(("iir-actor", actor),) if actor else None)
    except grpc.aio.AioRpcError as exc:
        status, code = _STATUS.get(exc.code(), (503, "auth_unavailable"))
        if status == 404 and "API key" in (exc.details() or ""):
            code = "key_not_found"
        message = exc.details() if status != 503 else "The authentication service is unavailable."
        raise APIError(status, message or "request failed", code=code) from None


@dataclass(frozen=True, slots=True)
class Admin:
    """An admitted admin request: the runtime, and who it is for the audit log."""

    gw: Runtime
    actor: str

    async def call(self, method: Any, message: Any) -> Any:
        return await call_auth(method, message, self.actor)


def _from_trusted_network(request: Request, gw: Runtime) -> bool:
    """The TCP peer is in IIR_TRUSTED_NETWORKS and nothing forwarded the request (a proxy's client could be
    anyone, and a forwarded header anything)."""
    if not gw.trusted_networks or any(name in FORWARDING_HEADERS for name, _ in request.scope["headers"]):
        return False
    return in_networks(request.scope.get("iir.peer", ""), gw.trusted_networks)


async def require_admin(request: Request) -> Admin:
    """An admin key, or no key at all from a trusted network; 401/403 otherwise."""
    gw: Runtime = request.app.state.gateway
    ip = client_ip(request)
    if extract_key(request.headers) is None and _from_trusted_network(request, gw):
        return Admin(gw, f"network:{request.scope.get('iir.peer', '')}")
    principal = await gw.auth.authenticate(request.headers, ip)
    if not principal.admin:
        raise APIError(403, "Managing API keys needs an admin key.", code="admin_required")
    return Admin(gw, f"key:{principal.key_id}")


def json_response(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def validated(schema: type[BaseModel], body: dict[str, Any]) -> Any:
    """The body as `schema`, or a 400 naming the first bad field."""
    try:
        return schema.model_validate(body)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        param = ".".join(str(p) for p in err["loc"])
        raise APIError(400, f"Invalid value for '{param}': {err['msg']}.", code="invalid_value", param=param) from None
