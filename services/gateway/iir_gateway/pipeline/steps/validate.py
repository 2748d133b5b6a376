"""Step 2: the body, read (once the key is known) and validated against the endpoint's schema."""

from __future__ import annotations

from iir_gateway.answer import Answer
from iir_gateway.pipeline.context import RequestContext
from iir_gateway.pipeline.step import Step
from iir_gateway.schemas import validate_body


class Validate(Step):
    name = "validate"

    def __init__(self, default_model: str = "") -> None:
        self.default_model = default_model

    async def before(self, ctx: RequestContext) -> Answer | None:
        if ctx.read_body is not None:
            ctx.body = await ctx.read_body()
        if self.default_model and ctx.operation != "embeddings" and ctx.body.get("model") is None:
            ctx.body["model"] = self.default_model
        ctx.request = request = validate_body(ctx.schema, ctx.body)
        ctx.model = request.model
        ctx.stream = bool(getattr(request, "stream", False))
        ctx.client_usage = bool((ctx.body.get("stream_options") or {}).get("include_usage"))
        if ctx.span is not None:
            ctx.span.describe(ctx.body)
        return None
