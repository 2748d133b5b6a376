"""The client span of an upstream call (to the response headers, or the first bytes of a stream), and the
W3C trace context handed to the upstream; nothing at all when tracing is off."""

from __future__ import annotations

from typing import Any

from iir_common import tracing
from iir_gateway.upstream.target import Upstream


def upstream_span(provider: str, upstream: Upstream, url: str, headers: dict[str, str]) -> Any:
    tracer = tracing.tracer()
    if tracer is None:
        return None
    from opentelemetry import propagate
    from opentelemetry.trace import SpanKind

    span = tracer.start_span(
        f"POST {provider}",
        kind=SpanKind.CLIENT,
        attributes={
            "http.request.method": "POST",
            "url.full": url,
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": upstream.model,
            "iir.upstream.target": upstream.target,
        },
    )
    from opentelemetry import trace

    propagate.inject(headers, context=trace.set_span_in_context(span))
    return span


def end_span(span: Any, status: int) -> None:
    if span is None:
        return
    span.set_attribute("http.response.status_code", status)
    if status >= 400:
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR, str(status)))
    span.end()
