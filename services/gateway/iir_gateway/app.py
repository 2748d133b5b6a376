"""The gateway's ASGI stack: the FastAPI application over the runtime (the composition root, `runtime.py`),
behind the request context middleware and the inference fast path."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp

from iir_common import __version__
from iir_common.logging import setup_logging
from iir_common.tracing import setup_tracing
from iir_common.tracing import shutdown as shutdown_tracing
from iir_gateway.admin import (
    key_routes,
    log_routes,
    ops_routes,
    org_routes,
    registry_routes,
    spend_routes,
    sso_routes,
    ui_routes,
)
from iir_gateway.errors import install_error_handlers
from iir_gateway.inbound.routes import fast_routes
from iir_gateway.inference import (
    anthropic_routes,
    batch_routes,
    fastpath,
    jobs_routes,
    openai_routes,
    responses_routes,
    responses_socket,
    task_routes,
)
from iir_gateway.runtime import Runtime
from iir_gateway.schemas import OPENAPI_MODELS
from iir_gateway.server.access_log import AccessLog
from iir_gateway.server.client_address import ClientAddressResolver
from iir_gateway.server.docs_routes import install_docs
from iir_gateway.server.middleware import RequestContextMiddleware
from iir_gateway.settings import GatewaySettings


def _add_schemas(app: FastAPI) -> None:
    """Puts the request models the routes read themselves into the OpenAPI components."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in OPENAPI_MODELS:
            js = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(js.pop("$defs", {}))
            components[model.__name__] = js
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(runtime: Runtime) -> FastAPI:
    """The FastAPI application over `runtime`; its lifespan starts and stops the runtime (and ends tracing)."""
    settings = runtime.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        # Start-up objects (modules, protobuf descriptors, routes) never die: keep them out of GC scans.
        gc.freeze()
        yield
        await runtime.stop()
        shutdown_tracing()

    # FastAPI's own telemetry checks the environment on every request; IIR exports its own.
    app = FastAPI(
        title="IIR gateway",
        version=__version__,
        lifespan=lifespan,
        description="OpenAI-compatible inference router. Model names are `<provider>/<model>`.",
        telemetry={"tracing": False, "metrics": False, "logs": False},
        docs_url=None,  # served by install_docs, from the package's own assets
        redoc_url=None,
        openapi_url="/openapi.json" if settings.docs_enabled else None,
    )
    if settings.docs_enabled:
        install_docs(app)
    app.include_router(sso_routes.router(runtime))  # before the UI's files: /ui/sso is not one
    if settings.ui_enabled:
        app.include_router(ui_routes.router())
    install_error_handlers(app)
    app.include_router(fastpath.router(runtime))
    app.include_router(openai_routes.router(runtime))
    app.include_router(ops_routes.router(runtime))
    app.include_router(registry_routes.router(runtime))
    app.include_router(key_routes.router(runtime))
    app.include_router(org_routes.router(runtime))
    app.include_router(spend_routes.router(runtime))
    app.include_router(log_routes.router(runtime))
    app.include_router(jobs_routes.router(runtime))
    app.include_router(task_routes.router(runtime))
    app.include_router(anthropic_routes.router(runtime))
    app.include_router(responses_routes.router(runtime))
    app.include_router(responses_socket.socket_router(runtime))
    app.include_router(batch_routes.router(runtime))
    _add_schemas(app)
    return app


def create_asgi(settings: GatewaySettings | None = None) -> ASGIApp:
    """What uvicorn serves: request context (id, client address, logs, metrics, size limit) → inference
    fast path → FastAPI."""
    settings = settings or GatewaySettings()
    setup_logging("gateway", settings.log_level)
    setup_tracing("gateway")
    runtime = Runtime(settings)
    return RequestContextMiddleware(
        fastpath.InferenceFastPath(create_app(runtime), runtime.pipeline, fast_routes(), settings.max_body_bytes),
        metrics=runtime.metrics,
        max_body_bytes=settings.max_body_bytes,
        upload_max_bytes=settings.batch_max_file_bytes + 64 * 1024,  # POST /v1/files: the file and its form
        access_log=AccessLog() if settings.access_log else None,
        addresses=ClientAddressResolver(settings.trusted_proxies),
    )
