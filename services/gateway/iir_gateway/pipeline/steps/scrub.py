"""Step 3: secrets out of the request before it leaves, and out of the answer before it is sent (a
stream event by event, holding back what may be a secret spelled over several events)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from iir_gateway.answer import Answer, Event
from iir_gateway.pipeline.context import RequestContext
from iir_gateway.pipeline.step import Step
from iir_gateway.scrubbing.stream import StreamScrubber


class ScrubPolicy(Protocol):
    def mode(self, key_mode: str) -> str: ...

    def request(self, body: dict[str, Any], mode: str) -> tuple[dict[str, Any], set[str]]:
        """The body with its secrets redacted (a copy when any was found), and the kinds found;
        APIError 400 in block mode."""
        ...

    def answer(self, data: bytes) -> tuple[bytes, set[str]]: ...

    def stream(self) -> StreamScrubber: ...


def _header(ctx: RequestContext) -> None:
    if ctx.scrubbed:
        ctx.response_headers["x-iir-scrubbed"] = ",".join(sorted(ctx.scrubbed))


class Scrub(Step):
    name = "scrub"

    def __init__(self, policy: ScrubPolicy) -> None:
        self.policy = policy

    async def before(self, ctx: RequestContext) -> Answer | None:
        assert ctx.principal is not None
        ctx.scrub_mode = self.policy.mode(ctx.principal.scrub_mode)
        ctx.body, found = self.policy.request(ctx.body, ctx.scrub_mode)
        if ctx.native is not None:  # what may be sent instead of the translation is scrubbed the same
            ctx.native.body, native_found = self.policy.request(ctx.native.body, ctx.scrub_mode)
            found |= native_found
        ctx.scrubbed |= found
        _header(ctx)
        return None

    def _active(self, ctx: RequestContext) -> bool:
        return ctx.scrub_mode != "off" and not ctx.cache_hit  # a cached answer was scrubbed when stored

    def on_document(self, ctx: RequestContext, document: Event) -> Event:
        if not self._active(ctx):
            return document
        raw, found = self.policy.answer(document.raw)
        if not found:
            return document
        ctx.scrubbed |= found
        _header(ctx)
        return Event(raw)

    def wants_chunks(self, ctx: RequestContext) -> bool:
        if not self._active(ctx):
            return False
        ctx.state[self.name] = self.policy.stream()  # this stream's scrubber
        return True

    def on_chunk(self, ctx: RequestContext, event: Event) -> Sequence[Event]:
        scrubber: StreamScrubber = ctx.state[self.name]
        return scrubber.feed(event)

    def on_chunks(self, ctx: RequestContext, events: Sequence[Event]) -> Sequence[Event]:
        scrubber: StreamScrubber = ctx.state[self.name]
        return scrubber.feed_all(events)

    def on_stream_end(self, ctx: RequestContext) -> Sequence[Event]:
        scrubber = ctx.state.get(self.name)
        return scrubber.flush() if scrubber is not None else ()
