"""The gateway's FastAPI application factory."""

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
from iir_gateway.admin import key_routes as admin_routes
from iir_gateway.admin import ops_routes, org_routes, registry_routes, spend_routes
from iir_gateway.admin.ui_routes import install_ui
from iir_gateway.batches.runner import BatchRunner
from iir_gateway.errors import install_error_handlers
from iir_gateway.inference import anthropic_routes, batch_routes, jobs_routes, openai_routes, responses_routes
from iir_gateway.inference.fastpath import InferenceFastPath
from iir_gateway.jobs.worker import JobWorker
from iir_gateway.pipeline.pipeline import Pipeline
from iir_gateway.pipeline.steps.access import Access
from iir_gateway.pipeline.steps.account import Account
from iir_gateway.pipeline.steps.admit import Admit
from iir_gateway.pipeline.steps.authenticate import Authenticate
from iir_gateway.pipeline.steps.auto_route import AutoRoute
from iir_gateway.pipeline.steps.cache import Cache
from iir_gateway.pipeline.steps.dispatch import Dispatch
from iir_gateway.pipeline.steps.scrub import Scrub
from iir_gateway.pipeline.steps.validate import Validate
from iir_gateway.runtime import Runtime
from iir_gateway.schemas import OPENAPI_MODELS
from iir_gateway.server.access_log import AccessLog
from iir_gateway.server.client_address import ClientAddressResolver
from iir_gateway.server.docs_routes import install_docs
from iir_gateway.server.metrics_server import MetricsServer
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


def inference_pipeline(rt: Runtime) -> Pipeline:
    """The steps of every inference request, in order (docs/ARCHITECTURE.md, "One request")."""
    return Pipeline(
        [
            Authenticate(rt.auth),
            Validate(rt.settings.default_model),
            Scrub(rt.scrubbing),
            AutoRoute(rt.auto),
            Access(rt.directory),
            Admit(
                rt.limiter,
                rt.directory,
                rt.settings.completion_token_reserve,
                rt.spawn,
                rt.settings.budget_max_tokens,
            ),
            Account(rt.spend, rt.directory, rt.directory, rt.metrics),
            Cache(rt.cache, rt.metrics, rt.spawn),
            Dispatch(rt.directory, rt.upstream),
        ]
    )


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    setup_logging("gateway", settings.log_level)
    setup_tracing("gateway")
    gateway = Runtime(settings)
    pipeline = inference_pipeline(gateway)
    metrics_server = MetricsServer(gateway.metrics.registry, settings.gateway_host, settings.metrics_port)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        await metrics_server.start()
        worker = JobWorker(pipeline, gateway.jobs, gateway.owners, settings.job_workers, settings.job_claim_idle_s)
        if settings.job_workers > 0:
            await worker.start()
        batches = BatchRunner(
            pipeline, gateway.batches, gateway.files, gateway.owners, settings.batch_concurrency, settings.batch_lease_s
        )
        if settings.batch_concurrency > 0:
            await batches.start()
        # Start-up objects (modules, protobuf descriptors, routes) never die: keep them out of GC scans.
        gc.freeze()
        yield
        await worker.stop()  # running jobs stay pending in Redis and are taken up by another worker
        await batches.stop()  # a running batch's lease lapses; another process goes on with it
        await metrics_server.stop()
        await gateway.stop()
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
    if settings.ui_enabled:
        install_ui(app)
    app.state.gateway = gateway
    app.state.pipeline = pipeline
    install_error_handlers(app)
    app.include_router(openai_routes.router)
    app.include_router(ops_routes.router)
    app.include_router(registry_routes.router)
    app.include_router(admin_routes.router)
    app.include_router(admin_routes.self_router)
    app.include_router(org_routes.teams)
    app.include_router(org_routes.users)
    app.include_router(spend_routes.router)
    app.include_router(jobs_routes.router)
    app.include_router(anthropic_routes.router)
    app.include_router(responses_routes.router)
    app.include_router(batch_routes.router)
    _add_schemas(app)
    return app


def create_asgi(settings: GatewaySettings | None = None) -> ASGIApp:
    """What uvicorn serves: request context (id, client address, logs, metrics, size limit) → inference
    fast path → FastAPI."""
    settings = settings or GatewaySettings()
    app = create_app(settings)
    gateway: Runtime = app.state.gateway
    return RequestContextMiddleware(
        InferenceFastPath(app, app.state.pipeline, settings.max_body_bytes),
        metrics=gateway.metrics,
        max_body_bytes=settings.max_body_bytes,
        upload_max_bytes=settings.batch_max_file_bytes + 64 * 1024,  # POST /v1/files: the file and its form
        access_log=AccessLog() if settings.access_log else None,
        addresses=ClientAddressResolver(settings.trusted_proxies),
    )
