"""The inference routes served straight from ASGI, from the one route table (`inbound.routes`).

FastAPI's routing, dependency solving and middleware stack cost about 40% of the gateway's CPU per
request (profiled with py-spy); POSTs to these paths skip them and call the same `serve`. Everything
else, including other methods on these paths, goes to FastAPI, where `router` declares the same routes:
for the OpenAPI document, a 405 for other methods, and to serve them when no fast path runs in front.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from types import SimpleNamespace
from typing import Any, Protocol

from fastapi import APIRouter, FastAPI, Request
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from iir_gateway.inbound.routes import Route, fast_routes
from iir_gateway.inference.entry import BodyLimit, serve, translated
from iir_gateway.pipeline.pipeline import Pipeline
from iir_gateway.schemas import openapi_body
from iir_gateway.server.bodies import client_ip, read_asgi_json, read_json_object


class InferenceFastPath:
    def __init__(self, app: FastAPI, pipeline: Pipeline, routes: Mapping[str, Route], max_body_bytes: int) -> None:
        self.app = app
        self.pipeline = pipeline
        self.max_body_bytes = max_body_bytes
        # `scope["route"].path` names the route in metrics, as for FastAPI's own routes.
        self.routes: dict[str, tuple[Route, Any]] = {p: (r, SimpleNamespace(path=p)) for p, r in routes.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = self.routes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if target is None:
            await self.app(scope, receive, send)
            return
        route, scope["route"] = target
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        client = scope.get("client")
        limit = self.max_body_bytes
        exchange = route.protocol.exchange(headers)
        read_body = translated(exchange, lambda: read_asgi_json(receive, limit))
        try:
            response = await serve(
                self.pipeline, route.protocol, exchange, read_body, headers, client[0] if client else "", receive
            )
        except ClientDisconnect:
            return
        await response(scope, receive, send)


class FastPathDeps(Protocol):
    """What the fast path's FastAPI routes read."""

    @property
    def pipeline(self) -> Pipeline: ...
    @property
    def settings(self) -> BodyLimit: ...


def router(deps: FastPathDeps) -> APIRouter:
    """The FastAPI routes of the paths the fast path serves."""
    api = APIRouter()
    for route in fast_routes().values():
        body = openapi_body(route.documented_body) if route.documented_body is not None else None
        api.add_api_route(
            route.path,
            _handler(deps, route),
            methods=["POST"],
            name=route.name,
            summary=route.summary,
            tags=[route.tag],
            openapi_extra=body,
        )
    return api


def _handler(deps: FastPathDeps, route: Route) -> Callable[[Request], Awaitable[Response]]:
    async def handle(request: Request) -> Response:
        exchange = route.protocol.exchange(request.headers)
        read_body = translated(exchange, lambda: read_json_object(request, deps.settings.max_body_bytes))
        return await serve(
            deps.pipeline, route.protocol, exchange, read_body, request.headers, client_ip(request), request.receive
        )

    return handle
