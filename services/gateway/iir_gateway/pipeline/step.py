"""The interface of a pipeline step: hooks around one request, each optional."""

from __future__ import annotations

from collections.abc import Sequence

from iir_gateway.answer import Answer, Event
from iir_gateway.pipeline.context import RequestContext


class Step:
    """A step of the pipeline. `before` runs in step order until one returns an answer; then, for the
    steps whose `before` ran and in the same order, `on_document` or `on_chunk` (and `on_stream_end`)
    see the answer, and `on_complete` runs exactly once per step when the request is over, whether
    it succeeded, failed or was cut (read `ctx.status`, `ctx.ok`, `ctx.usage`)."""

    name = "step"

    async def before(self, ctx: RequestContext) -> Answer | None:
        """Reads and fills in `ctx`; raises APIError to refuse; returns an answer to end the request here."""
        return None

    def on_document(self, ctx: RequestContext, document: Event) -> Event:
        """A whole answer passes: the same, or a changed one."""
        return document

    def wants_chunks(self, ctx: RequestContext) -> bool:
        """Whether `on_chunk` must see this request's events (asked once, when its stream starts)."""
        return type(self).on_chunk is not Step.on_chunk

    def on_chunk(self, ctx: RequestContext, event: Event) -> Sequence[Event]:
        """One event of a stream passes: the events to send on (none while something is held back)."""
        return (event,)

    def on_chunks(self, ctx: RequestContext, events: Sequence[Event]) -> Sequence[Event]:
        """The events one upstream read brought, together (a step may check them at once)."""
        if len(events) == 1:
            return self.on_chunk(ctx, events[0])
        return [out for event in events for out in self.on_chunk(ctx, event)]

    def on_stream_end(self, ctx: RequestContext) -> Sequence[Event]:
        """The stream ran to its end: what was held back."""
        return ()

    def on_complete(self, ctx: RequestContext) -> None:
        """The request is over (a stream possibly long after `before` returned)."""
