"""Runs one request through the steps, top to bottom, and returns its `Answer`.

`before` hooks run in order until one answers (the cache on a hit, else dispatch). The answer then
passes the hooks of the steps that ran, in the same order: a document at once, a stream event by
event as the caller reads it. `on_complete` runs once per step when the request is over: at once for a
document or an error, when the stream is closed for a stream. The caller (the HTTP edge, a job worker)
must read or `aclose` a stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from iir_common import tracing
from iir_gateway.answer import Answer
from iir_gateway.errors import APIError
from iir_gateway.pipeline.context import RequestContext
from iir_gateway.pipeline.request_span import RequestSpan
from iir_gateway.pipeline.step import Step
from iir_gateway.pipeline.stream import HookedStream

log = logging.getLogger(__name__)


class Pipeline:
    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = tuple(steps)
        # Hooks a step does not override are not called (most steps have two or three of five).
        self._befores = tuple(type(s).before is not Step.before for s in self.steps)
        self._documents = frozenset(s for s in self.steps if type(s).on_document is not Step.on_document)
        self._completes = frozenset(s for s in self.steps if type(s).on_complete is not Step.on_complete)

    async def run(self, ctx: RequestContext) -> Answer:
        tracer = tracing.tracer()
        ctx.span = RequestSpan(tracer, ctx.operation) if tracer is not None else None
        try:
            return await self._run(ctx)
        finally:
            if ctx.span is not None:
                ctx.span.detach()  # the span lives on with a stream; its context ends with this call

    async def _run(self, ctx: RequestContext) -> Answer:
        ran: list[Step] = []
        answer: Answer | None = None
        try:
            for step, has_before in zip(self.steps, self._befores, strict=True):
                ran.append(step)
                if has_before:
                    answer = await step.before(ctx)
                    if answer is not None:
                        break
            if answer is None:
                raise APIError(500, "No step answered the request.", code="internal_error")
        except APIError as exc:
            ctx.status, ctx.error_code = exc.status, exc.code or exc.type or ""
            for name, value in ctx.response_headers.items():
                exc.headers.setdefault(name, value)
            self._complete(ran, ctx, exc)
            raise
        except BaseException as exc:
            ctx.status = 499 if isinstance(exc, asyncio.CancelledError) else 500  # 499: the client left
            self._complete(ran, ctx, None)
            raise
        ctx.answered_by = answer.model
        ctx.status = 200
        if answer.stream is not None:
            answer.stream = HookedStream(answer.stream, ran, ctx, self._stream_ended)
        else:
            assert answer.document is not None
            for step in ran:
                if step in self._documents:
                    answer.document = step.on_document(ctx, answer.document)
            ctx.usage, ctx.ok = answer.usage(), True
            self._complete(ran, ctx, None)
        answer.headers.update(ctx.response_headers)
        return answer

    def _stream_ended(self, stream: HookedStream) -> None:
        ctx = stream.ctx
        ctx.usage, ctx.ok = stream.usage, stream.completed
        self._complete(stream.ran, ctx, None)

    def _complete(self, ran: Sequence[Step], ctx: RequestContext, error: APIError | None) -> None:
        for step in ran:
            if step not in self._completes:
                continue
            try:
                step.on_complete(ctx)
            except Exception:  # one step's accounting failing must not skip the others'
                log.exception("a pipeline step failed to complete", extra={"step": step.name})
        if ctx.span is not None:
            if error is not None:
                ctx.span.fail(error.status, error.code)
            elif ctx.status >= 500:
                ctx.span.fail(ctx.status, "internal_error")
            else:
                ctx.span.finish(ctx.answered_by or ctx.model, ctx.usage, ctx.ok)
