"""Who may manage keys, teams, users and spend (an admin key; or, where IIR_TRUSTED_NETWORKS is set, no key
from those networks, for requests a browser page on another site cannot make), and calling the auth
service on their behalf."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from fastapi import Request
from pydantic import BaseModel, ValidationError

from iir_gateway.admin.sessions import SESSION_PREFIX, SessionStore
from iir_gateway.errors import APIError
from iir_gateway.keys.authenticator import Authenticator, extract_key
from iir_gateway.networks import Network, in_networks
from iir_gateway.server.bodies import client_ip
from iir_gateway.server.client_address import is_forwarded

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


class AdminAccess(Protocol):
    """What deciding on admin access reads of the runtime."""

    @property
    def auth(self) -> Authenticator: ...
    @property
    def trusted_networks(self) -> tuple[Network, ...]: ...
    @property
    def sessions(self) -> SessionStore: ...


class BodyLimit(Protocol):
    """The setting that bounds the admin routes' request bodies."""

    @property
    def max_body_bytes(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Admin:
    """An admitted admin request: who it is, for the audit log; a team admin's `team_id` bounds what it
    sees and changes to that team's."""

    actor: str
    role: str = "admin"
    team_id: str = ""

    async def call(self, method: Any, message: Any) -> Any:
        return await call_auth(method, message, self.actor)


_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_JSON = "application/json"


def _from_trusted_network(request: Request, networks: tuple[Network, ...]) -> bool:
    """The TCP peer is in IIR_TRUSTED_NETWORKS and nothing forwarded the request (a proxy's client could be
    anyone, and a forwarded header anything)."""
    if not networks or is_forwarded(request.scope["headers"]):
        return False
    return in_networks(request.scope.get("iir.peer", ""), networks)


def _loopback_host(host: str) -> bool:
    """`localhost`, `127.0.0.1` or `[::1]`, with or without a port."""
    for name in _LOOPBACK_HOSTS:
        if host == name or (host.startswith(f"{name}:") and host[len(name) + 1 :].isdigit()):
            return True
    return False


def _header_values(request: Request, name: bytes) -> list[str]:
    return [v.decode("latin-1").strip().lower() for n, v in request.scope["headers"] if n == name]


def _cross_site(request: Request) -> str:
    """Why a browser page on another site (or one reached through DNS rebinding, whose requests name the
    attacker's host) could have sent this request; "" when it could not."""
    hosts = _header_values(request, b"host")
    if len(hosts) != 1 or not _loopback_host(hosts[0]):
        return "the Host header is not a loopback name"
    origins = _header_values(request, b"origin")
    if origins and origins != [f"http://{hosts[0]}"] and origins != [f"https://{hosts[0]}"]:
        return "the Origin header names another site"
    if any(v not in ("same-origin", "none") for v in _header_values(request, b"sec-fetch-site")):
        return "Sec-Fetch-Site says another site sent it"
    return ""


def keyless_admin(request: Request, deps: AdminAccess) -> bool:
    """Whether this request may manage without a key: from a trusted network, not forwarded, and not one a
    page on another site could send (loopback Host, no foreign Origin, no cross-site Sec-Fetch-Site)."""
    return _from_trusted_network(request, deps.trusted_networks) and not _cross_site(request)


def _require_json_write(request: Request, *, keyless: bool) -> None:
    """Admin writes carry JSON: a declared type other than `application/json` is a 415 (a page can send
    text/plain and form bodies to another site without asking), and so is a key-less write with a body but
    no type. A write with neither body nor type (revoke, block) needs no type."""
    if request.method in _SAFE_METHODS:
        return
    types = _header_values(request, b"content-type")
    media = types[0].partition(";")[0].strip() if len(types) == 1 else None
    has_body = any(v not in ("", "0") for v in _header_values(request, b"content-length")) or bool(
        _header_values(request, b"transfer-encoding")
    )
    if (types and media != _JSON) or (keyless and has_body and not types):
        raise APIError(
            415, "Admin requests with a body must send 'Content-Type: application/json'.", code="unsupported_media_type"
        )


async def _signed_in(request: Request, deps: AdminAccess, token: str, team_scope: bool) -> Admin:
    """A single sign-on session's access: an admin's; a viewer's for reading only; a team admin's where the
    route bounds what it does to a team (`team_scope`)."""
    session = await deps.sessions.get(token)
    if session is None:
        raise APIError(401, "This session has ended; sign in again.", code="session_expired")
    if session.role == "viewer" and request.method not in _SAFE_METHODS:
        raise APIError(403, "A viewer reads the admin pages and changes nothing.", code="read_only_role")
    if session.role == "team_admin" and not team_scope:
        raise APIError(
            403,
            "A team admin manages its own team's keys and sees its spend and request log; this is for admins.",
            code="admin_required",
        )
    _require_json_write(request, keyless=False)
    return Admin(session.actor, session.role, session.team_id)


async def require_admin(request: Request, deps: AdminAccess, team_scope: bool = False) -> Admin:
    """An admin key, a signed-in person whose role allows it, or no key at all from a trusted network
    (same-origin, loopback Host); 401/403 otherwise. With `team_scope` the route bounds a team admin to its
    team (`Admin.team_id`)."""
    ip = client_ip(request)
    token = extract_key(request.headers)
    if token is not None and token.startswith(SESSION_PREFIX):
        return await _signed_in(request, deps, token, team_scope)
    if extract_key(request.headers) is None and _from_trusted_network(request, deps.trusted_networks):
        if reason := _cross_site(request):
            raise APIError(
                403,
                f"Key management without a key is refused here: {reason}. Open the gateway as http://localhost "
                "(or 127.0.0.1, [::1]), or send an admin key.",
                code="cross_site_refused",
            )
        _require_json_write(request, keyless=True)
        return Admin(f"network:{request.scope.get('iir.peer', '')}")
    principal = await deps.auth.authenticate(request.headers, ip)
    if not principal.admin:
        raise APIError(403, "Managing API keys needs an admin key.", code="admin_required")
    _require_json_write(request, keyless=False)
    return Admin(f"key:{principal.key_id}")


def validated(schema: type[BaseModel], body: dict[str, Any]) -> Any:
    """The body as `schema`, or a 400 naming the first bad field."""
    try:
        return schema.model_validate(body)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        param = ".".join(str(p) for p in err["loc"])
        raise APIError(400, f"Invalid value for '{param}': {err['msg']}.", code="invalid_value", param=param) from None
