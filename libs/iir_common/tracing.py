"""OpenTelemetry tracing, on only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (OTLP over HTTP).

Off, nothing is installed: no provider, no interceptors, and `tracer()` is None so callers skip span
work entirely. On, gRPC servers and clients carry the trace context, so a request is one trace across
gateway, auth, classifier and the upstream.
"""

from __future__ import annotations

import os
from typing import Any

_tracer: Any = None


def enabled() -> bool:
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def setup_tracing(service: str) -> Any:
    """Installs the OTLP exporter for `service` (once); returns the tracer, or None when tracing is off."""
    global _tracer
    if _tracer is not None or not enabled():
        return _tracer
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = os.environ.get("OTEL_SERVICE_NAME") or f"iir-{service}"
    provider = TracerProvider(resource=Resource.create({"service.name": name, "service.namespace": "iir"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _tracer = trace.get_tracer("iir")
    return _tracer


def tracer() -> Any:
    return _tracer


def server_interceptors() -> list[Any]:
    if not enabled():
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor()]


def client_interceptors() -> list[Any]:
    if not enabled():
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors())


def shutdown() -> None:
    """Flushes spans not yet exported."""
    if _tracer is not None:
        from opentelemetry import trace

        provider = trace.get_tracer_provider()
        if hasattr(provider, "shutdown"):
            provider.shutdown()
