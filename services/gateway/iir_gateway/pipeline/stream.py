"""A stream passed through the steps' chunk hooks, which ends the request when it ends."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from iir_gateway.answer import Event, EventStream
from iir_gateway.pipeline.context import RequestContext
from iir_gateway.pipeline.step import Step


class HookedStream:
    """Each event of `source` goes through every step's `on_chunk` in order; when the source ends, each
    step's `on_stream_end` adds what it held back (through the steps after it). `aclose` closes the
    source, and calls `on_end` (with this stream) once, however the stream ended. Nothing here points
    back at the answer, so a finished request is freed at once, not by the garbage collector."""

    def __init__(
        self,
        source: EventStream,
        steps: Sequence[Step],
        ctx: RequestContext,
        on_end: Callable[[HookedStream], None],
    ) -> None:
        self.source = source
        # Only the steps that look at this request's events are called for each one; with their position.
        self.steps = [
            (i, s) for i, s in enumerate(steps) if type(s).on_chunk is not Step.on_chunk and s.wants_chunks(ctx)
        ]
        self.enders = [(i, s) for i, s in enumerate(steps) if type(s).on_stream_end is not Step.on_stream_end]
        self.ctx = ctx
        self.ran = steps
        self.on_end = on_end
        self.usage: dict[str, Any] | None = None
        self.completed = False
        self._pending: deque[Event] = deque()
        self._source_done = False
        self._closed = False

    def __aiter__(self) -> HookedStream:
        return self

    async def __anext__(self) -> Event:
        while not self._pending:
            if self._source_done:
                await self.aclose()
                raise StopAsyncIteration
            try:
                event = await self.source.__anext__()
            except StopAsyncIteration:
                self._source_done = True
                self._ended()
                continue
            buffered = self.source.take_buffered()  # the rest of the same read, through the hooks at once
            self._pending.extend(self._through(-1, [event, *buffered] if buffered else (event,)))
        return self._pending.popleft()

    def take_buffered(self) -> list[Event]:
        events = list(self._pending)
        self._pending.clear()
        return events

    def _through(self, after: int, events: Sequence[Event]) -> Sequence[Event]:
        """`events` through the chunk hooks of the steps after position `after`."""
        ctx = self.ctx
        for i, step in self.steps:
            if i > after and events:
                events = step.on_chunks(ctx, events)
        return events

    def _ended(self) -> None:
        for i, step in self.enders:
            held = step.on_stream_end(self.ctx)
            if held:
                self._pending.extend(self._through(i, held))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.source.aclose()
        self.usage, self.completed = self.source.usage, self.source.completed and self._source_done
        self.on_end(self)
