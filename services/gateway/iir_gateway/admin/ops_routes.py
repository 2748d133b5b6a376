"""Operational routes, without authentication (a key sees more of `/health`, an admin key its dependency
details): health, readiness, liveness, version. (Metrics are on their own port: `metrics_server.py`.)"""

from __future__ import annotations

from typing import Any, Protocol

from fastapi import APIRouter, Request
from starlette.responses import Response

from iir_common import __version__
from iir_gateway.admin.access import AdminAccess, keyless_admin
from iir_gateway.errors import APIError
from iir_gateway.keys.authenticator import extract_key
from iir_gateway.principal import Principal
from iir_gateway.server.bodies import client_ip, json_response


class DefaultModel(Protocol):
    @property
    def default_model(self) -> str: ...
    @property
    def auto_default_model(self) -> str: ...


class OpsDeps(AdminAccess, Protocol):
    """What the operational routes read of the runtime."""

    @property
    def settings(self) -> DefaultModel: ...
    async def health(self) -> tuple[bool, dict[str, Any]]: ...
    async def ready(self) -> tuple[bool, dict[str, Any]]: ...
    def list_models(self, principal: Principal) -> list[dict[str, Any]]: ...


async def _caller(request: Request, deps: AdminAccess) -> tuple[Principal | None, bool]:
    """The caller's key (None without a valid one) and whether it may see dependency details: an admin
    key, or key-less admin access."""
    if extract_key(request.headers) is None:
        return None, keyless_admin(request, deps)
    try:
        principal = await deps.auth.authenticate(request.headers, client_ip(request))
    except APIError:  # a bad key, or auth away: the summary only
        return None, False
    return principal, principal.admin


def _seed_fields(report: dict[str, Any]) -> dict[str, Any]:
    """The task API's health fields anyone may read: Redis answers, a model is there to serve."""
    deps = report.get("dependencies", {})
    return {
        "redis_connected": deps.get("redis", {}).get("status") == "ok",
        "model_loaded": deps.get("registry", {}).get("models", 0) > 0,
        "version": report.get("version", ""),
    }


def _model_fields(deps: OpsDeps, principal: Principal) -> dict[str, Any]:
    """The task API's model fields for a key: the default model, who serves it, what the key may call."""
    model = deps.settings.default_model or deps.settings.auto_default_model
    provider = model.split("/", 1)[0] if "/" in model else model  # `auto`: the classifier chooses
    return {
        "backend": "vllm" if provider == "local" else provider,
        "model": model,
        "available_models": [card["id"] for card in deps.list_models(principal)],
    }


def router(deps: OpsDeps) -> APIRouter:
    """Health, readiness, liveness and version."""
    routes = APIRouter(tags=["Operations"])

    @routes.get(
        "/health",
        summary="Health: `status`, `redis_connected`, `model_loaded` and `version` for anyone; `backend`, `model` "
        "and `available_models` for a key; each dependency's status and latency for an admin key (503 when a "
        "required one is down)",
    )
    async def health(request: Request) -> Response:
        healthy, report = await deps.health()
        principal, details = await _caller(request, deps)
        shown = {"status": report["status"], **_seed_fields(report)}
        if principal is not None:
            shown |= _model_fields(deps, principal)
        if details:
            shown |= report
        return json_response(shown, 200 if healthy else 503)

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
        if not (await _caller(request, deps))[1]:  # the count of cached keys tells how many keys are active
            report = {"status": report["status"]}
        return json_response(report, 200 if ok else 503)

    @routes.get("/version", summary="Gateway version")
    async def version() -> Response:
        return json_response({"name": "iir-gateway", "version": __version__})

    return routes
