"""Step 2: the body, read (once the key is known) and validated against the operation's schema. Counts
the schema accepted in another form (`8.0`, `"8"`) become the integers it read: the limits reserve for
those, and every upstream must generate what was reserved."""

from __future__ import annotations

from typing import Any

from iir_gateway.answer import Answer
from iir_gateway.pipeline.context import RequestContext
from iir_gateway.pipeline.step import Step
from iir_gateway.schemas import InferenceRequest, validate_body

COUNTS = ("n", "best_of", "max_tokens", "max_completion_tokens")


def normalise_counts(body: dict[str, Any], request: InferenceRequest) -> dict[str, Any]:
    """`body` with each count as the integer the schema read from it."""
    fixed = {}
    for name in COUNTS:
        value = body.get(name)
        if value is not None and type(value) is not int:
            parsed = getattr(request, name, None)
            if isinstance(parsed, int) and not isinstance(parsed, bool):
                fixed[name] = parsed
    return {**body, **fixed} if fixed else body


class Validate(Step):
    name = "validate"

    def __init__(self, default_model: str = "") -> None:
        self.default_model = default_model

    async def before(self, ctx: RequestContext) -> Answer | None:
        if ctx.read_body is not None:
            ctx.body = await ctx.read_body()
        if self.default_model and ctx.operation != "embeddings" and ctx.body.get("model") is None:
            ctx.body["model"] = self.default_model
        request = validate_body(ctx.schema, ctx.body)
        ctx.body = normalise_counts(ctx.body, request)
        ctx.model = request.model
        ctx.stream = bool(getattr(request, "stream", False))
        ctx.client_usage = bool((ctx.body.get("stream_options") or {}).get("include_usage"))
        if ctx.span is not None:
            ctx.span.describe(ctx.body)
        return None
