"""The root span of one inference request, with the OpenTelemetry GenAI attributes.

Created only when tracing is on (`iir_common.tracing`); the gRPC calls and the upstream call made while
it is current become its children. A stream's span ends with the stream.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import context, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

_OPERATIONS = {"chat/completions": "chat", "completions": "text_completion", "embeddings": "embeddings"}


class RequestSpan:
    def __init__(self, tracer: Any, path: str) -> None:
        self.operation = _OPERATIONS.get(path, path)
        self.span = tracer.start_span(
            self.operation, kind=SpanKind.SERVER, attributes={"gen_ai.operation.name": self.operation}
        )
        self._token = context.attach(trace.set_span_in_context(self.span))
        self._ended = False

    def describe(self, body: dict[str, Any]) -> None:
        """The request's model and parameters, once the body is read and valid."""
        model = str(body.get("model", ""))
        self.span.update_name(f"{self.operation} {model}")
        self.span.set_attribute("gen_ai.request.model", model)
        self.span.set_attribute("gen_ai.provider.name", model.partition("/")[0] if "/" in model else "iir")
        self.span.set_attribute("iir.stream", bool(body.get("stream")))
        for key, name in (
            ("max_tokens", "gen_ai.request.max_tokens"),
            ("temperature", "gen_ai.request.temperature"),
            ("top_p", "gen_ai.request.top_p"),
            ("seed", "gen_ai.request.seed"),
        ):
            if isinstance(body.get(key), int | float):
                self.span.set_attribute(name, body[key])

    def detach(self) -> None:
        """Leaves the span's context (the span itself may live on, for a stream)."""
        context.detach(self._token)

    def finish(self, answered_by: str, usage: dict[str, Any] | None, ok: bool) -> None:
        if self._ended:
            return
        self._ended = True
        self.span.set_attribute("gen_ai.response.model", answered_by)
        if usage:
            self.span.set_attribute("gen_ai.usage.input_tokens", int(usage.get("prompt_tokens") or 0))
            self.span.set_attribute("gen_ai.usage.output_tokens", int(usage.get("completion_tokens") or 0))
        if not ok:
            self.span.set_status(Status(StatusCode.ERROR, "the upstream broke off"))
        self.span.end()

    def fail(self, status: int, code: str | None) -> None:
        if self._ended:
            return
        self._ended = True
        self.span.set_attribute("http.response.status_code", status)
        self.span.set_attribute("error.type", code or str(status))
        self.span.set_status(Status(StatusCode.ERROR, code or str(status)))
        self.span.end()
