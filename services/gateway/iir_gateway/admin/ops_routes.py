"""Operational routes, without authentication (an admin key sees `/health`'s details): health, readiness,
liveness, version. (Metrics are on their own port: `metrics_server.py`.)"""

from __future__ import annotations

from typing import Any, Protocol

from fastapi import APIRouter, Request
from starlette.responses import Response

from iir_common import __version__
from iir_gateway.admin.access import AdminAccess, keyless_admin
from iir_gateway.errors import APIError
from iir_gateway.keys.authenticator import extract_key
from iir_gateway.server.bodies import client_ip, json_response


class OpsDeps(AdminAccess, Protocol):
    """What the operational routes read of the runtime."""

    async def health(self) -> tuple[bool, dict[str, Any]]: ...
    async def ready(self) -> tuple[bool, dict[str, Any]]: ...


async def _sees_details(request: Request, deps: AdminAccess) -> bool:
    """Whether the caller may see dependency details: an admin key, or key-less admin access."""
    if extract_key(request.headers) is None:
        return keyless_admin(request, deps)
    try:
        return (await deps.auth.authenticate(request.headers, client_ip(request))).admin
    except APIError:  # a bad key, or auth away: the summary only
        return False


def router(deps: OpsDeps) -> APIRouter:
    """Health, readiness, liveness and version."""
    routes = APIRouter(tags=["Operations"])

    @routes.get(
        "/health",
        summary="Health: `status` for anyone; each dependency's status and latency for an admin key (503 when a "
        "required one is down)",
    )
    async def health(request: Request) -> Response:
        healthy, report = await deps.health()
        if not await _sees_details(request, deps):
            report = {"status": report["status"]}
        return json_response(report, 200 if healthy else 503)

    @routes.get("/health/live", summary="Liveness: the process answers")
    @routes.get("/healthz", summary="Liveness: the process answers (the Inference Gateway's name)")
    async def live() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @routes.get(
        "/health/ready",
        summary="Readiness: this process can serve (keys checkable, a catalogue loaded); `status` for anyone, "
        "the details for an admin key",
    )
    async def ready(request: Request) -> Response:
        ok, report = await deps.ready()
        if not await _sees_details(request, deps):  # the count of cached keys tells how many keys are active
            report = {"status": report["status"]}
        return json_response(report, 200 if ok else 503)

    @routes.get("/version", summary="Gateway version")
    async def version() -> Response:
        return json_response({"name": "iir-gateway", "version": __version__})

    return routes
