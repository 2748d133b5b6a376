"""A job's submission: its request is at most `max_bytes` (it waits in Redis until a worker runs it)."""

from __future__ import annotations

import orjson

from iir_gateway.answer import Answer
from iir_gateway.errors import APIError
from iir_gateway.pipeline.context import RequestContext
from iir_gateway.pipeline.step import Step


class JobSize(Step):
    name = "job_size"

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    async def before(self, ctx: RequestContext) -> Answer | None:
        size = len(orjson.dumps(ctx.body))
        if size > self.max_bytes:
            raise APIError(
                413, f"A job's request may hold {self.max_bytes} bytes; this one has {size}.", code="request_too_large"
            )
        return None
