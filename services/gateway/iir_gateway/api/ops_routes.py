"""Operational routes, without authentication: health, readiness, liveness, version. (Metrics are on
their own port: `metrics_server.py`.)"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from iir_common import __version__
from iir_gateway.runtime import Runtime

router = APIRouter(tags=["Operations"])


@router.get("/health", summary="Health of the gateway and of each dependency (503 when a required one is down)")
async def health(request: Request) -> Response:
    gw: Runtime = request.app.state.gateway
    healthy, report = await gw.health()
    return Response(orjson.dumps(report), status_code=200 if healthy else 503, media_type="application/json")


@router.get("/health/live", summary="Liveness: the process answers")
@router.get("/healthz", summary="Liveness: the process answers (the Inference Gateway's name)")
async def live() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


@router.get("/health/ready", summary="Readiness: this process can serve (keys checkable, a catalogue loaded)")
async def ready(request: Request) -> Response:
    gw: Runtime = request.app.state.gateway
    ok, report = await gw.ready()
    return Response(orjson.dumps(report), status_code=200 if ok else 503, media_type="application/json")


@router.get("/version", summary="Gateway version")
async def version() -> Response:
    return Response(orjson.dumps({"name": "iir-gateway", "version": __version__}), media_type="application/json")
