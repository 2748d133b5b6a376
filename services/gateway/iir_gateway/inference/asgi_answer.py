"""An `Answer` as ASGI: a JSON response, or an SSE stream that stops (and ends the upstream call) as soon
as the client goes away."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import anyio
import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from iir_gateway.answer import Answer, Event, EventStream
from iir_gateway.wire.sse import DONE_FRAME, frame

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class EventStreamResponse(Response):
    """Writes each event as `data: …`, then `data: [DONE]` when the stream ran to its end. The stream is
    closed however the response ends, even when the client left before the first event."""

    media_type = "text/event-stream"

    def __init__(self, stream: EventStream, headers: dict[str, str]) -> None:
        # No body is given to `Response`, which would otherwise announce a Content-Length.
        self.stream = stream
        self.status_code = 200
        self.background = None
        self.init_headers({**SSE_HEADERS, **headers})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def stream_then_cancel() -> None:
                    try:
                        await self._send_events(send)
                    except OSError:
                        pass
                    group.cancel_scope.cancel()

                group.start_soon(stream_then_cancel)
                while (await receive())["type"] != "http.disconnect":
                    pass
                group.cancel_scope.cancel()
        finally:
            await self.stream.aclose()

    async def _send_events(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        stream = self.stream
        async for event in stream:
            more = stream.take_buffered()  # what the same upstream read brought: one write for all
            body = frame(event.raw) if not more else b"".join(frame(e.raw) for e in (event, *more))
            await send({"type": "http.response.body", "body": body, "more_body": True})
        tail = DONE_FRAME if self.stream.completed else b""
        await send({"type": "http.response.body", "body": tail, "more_body": False})


def _renamed(event: Event, answer_id: str) -> Event:
    data = event.data
    if not isinstance(data, dict) or "id" not in data or data["id"] == answer_id:
        return event
    return Event.of({**data, "id": answer_id})


class _RenamedStream:
    """A stream whose events carry the id the client chose."""

    def __init__(self, stream: EventStream, answer_id: str) -> None:
        self.inner, self.answer_id = stream, answer_id

    def __getattr__(self, name: str) -> Any:  # usage, completed
        return getattr(self.inner, name)

    def __aiter__(self) -> _RenamedStream:
        return self

    async def __anext__(self) -> Event:
        return _renamed(await self.inner.__anext__(), self.answer_id)

    def take_buffered(self) -> list[Event]:
        return [_renamed(e, self.answer_id) for e in self.inner.take_buffered()]

    async def aclose(self) -> None:
        await self.inner.aclose()


def with_id(answer: Answer, answer_id: str) -> Answer:
    """The answer with `answer_id` as its `id` (and its stream's events'): the client's `X-Request-ID`."""
    if answer.stream is not None:
        answer.stream = _RenamedStream(answer.stream, answer_id)
    elif answer.document is not None:
        answer.document = _renamed(answer.document, answer_id)
    return answer


def named_frames(events: Iterable[tuple[str, Any]]) -> bytes:
    """SSE frames with an `event:` name each (the Messages and Responses streams)."""
    return b"".join(b"event: %s\ndata: %s\n\n" % (name.encode(), orjson.dumps(data)) for name, data in events)


def to_response(answer: Answer) -> Response:
    headers = {"x-iir-model": answer.model, **answer.headers}
    if answer.stream is not None:
        return EventStreamResponse(answer.stream, headers)
    assert answer.document is not None
    return Response(answer.document.raw, media_type="application/json", headers=headers)
