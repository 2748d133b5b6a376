"""An `Answer` as ASGI, written by the request's exchange: a JSON response, or an SSE stream that stops
(and ends the upstream call) as soon as the client goes away."""

from __future__ import annotations

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from iir_gateway.answer import Answer, EventStream
from iir_gateway.inbound.base import Exchange, StreamEncoder

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class EventStreamResponse(Response):
    """Writes the stream's events as `encoder` frames them. The stream is closed however the response
    ends, even when the client left before the first event."""

    media_type = "text/event-stream"

    def __init__(self, stream: EventStream, headers: dict[str, str], encoder: StreamEncoder) -> None:
        # No body is given to `Response`, which would otherwise announce a Content-Length.
        self.stream = stream
        self.encoder = encoder
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
        stream, encoder = self.stream, self.encoder
        head = encoder.head()
        if head:
            await send({"type": "http.response.body", "body": head, "more_body": True})
        async for event in stream:
            # With what the same upstream read brought: one write for all.
            body = encoder.feed(event, stream.take_buffered())
            if body:
                await send({"type": "http.response.body", "body": body, "more_body": True})
        tail = await encoder.tail(stream.completed)
        await send({"type": "http.response.body", "body": tail, "more_body": False})


async def to_response(answer: Answer, exchange: Exchange) -> Response:
    headers = exchange.headers(answer)
    if answer.stream is not None:
        return EventStreamResponse(answer.stream, headers, exchange.stream(answer))
    return Response(await exchange.document(answer), media_type="application/json", headers=headers)
