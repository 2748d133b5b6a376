"""The WebSocket mode of `/v1/responses` (Open Responses and OpenAI): on one socket, authenticated when it
opens (a key in `Authorization` or `X-API-Key`; without one the handshake is refused), the client sends
`{"type": "response.create", …}` messages, one at a time, and gets each response's stream events as JSON
text messages, ending with its terminal event (`response.completed`, `.incomplete`, `.failed`) or an
`error` event (`{"type": "error", "status": 400, "error": {"code", "message", …}}`).

Each turn is a streamed `POST /v1/responses` through the same pipeline (keys, limits, scrubbing, usage).
The socket keeps its most recent response, stored or not, so a `store: false` turn can be continued by
`previous_response_id` on the same socket (on another it is `previous_response_not_found`, as it is
nowhere else); a failed turn forgets the response it continued.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from iir_gateway.errors import APIError
from iir_gateway.inbound.responses import RESPONSES
from iir_gateway.inference.responses_routes import ResponsesDeps, prepared
from iir_gateway.pipeline.entry import run_request
from iir_gateway.principal import Principal

log = logging.getLogger(__name__)
_POLICY_VIOLATION = 1008  # the close code for a socket refused by policy (here: its key)


def _error_event(exc: APIError) -> str:
    error = exc.error_object()
    error["code"] = error.get("code") or error.get("type") or "error"
    return orjson.dumps({"type": "error", "status": exc.status, "error": error}).decode()


def _messages(frames: bytes) -> list[str]:
    """The JSON of each server-sent event in `frames` (`event: …\\ndata: {…}\\n\\n`)."""
    out = []
    for frame in frames.split(b"\n\n"):
        _, sep, data = frame.partition(b"data: ")
        if sep:
            out.append(data.decode())
    return out


def socket_router(deps: ResponsesDeps) -> APIRouter:
    api = APIRouter()

    @api.websocket("/v1/responses")
    async def responses_socket(ws: WebSocket) -> None:
        client = ws.client.host if ws.client else ""
        try:
            principal = await deps.auth.authenticate(ws.headers, client)
        except APIError as exc:
            await ws.close(code=_POLICY_VIOLATION, reason=exc.message[:120])
            return
        await ws.accept()
        recent: dict[str, Any] = {}
        try:
            while True:
                received = await ws.receive()
                if received["type"] == "websocket.disconnect":
                    return
                text = received.get("text") or (received.get("bytes") or b"").decode("utf-8", "replace")
                try:
                    messages = await _turn(deps, ws, principal, client, text, recent)
                except WebSocketDisconnect:
                    raise
                except Exception:  # a fault of ours: said as an event, and the socket closed
                    log.exception("a WebSocket turn failed")
                    error = APIError(
                        500, "The server had an error while processing your request.", code="internal_error"
                    )
                    await ws.send_text(_error_event(error))
                    await ws.close(code=1011)
                    return
                for message in messages:
                    await ws.send_text(message)
        except WebSocketDisconnect:
            return

    return api


async def _turn(
    deps: ResponsesDeps, ws: WebSocket, principal: Principal, client: str, text: str, recent: dict[str, Any]
) -> list[str]:
    """One `response.create`: its events are sent as they come; what is left to send is returned."""
    continued: str | None = None
    try:
        if len(text) > deps.settings.max_body_bytes:
            raise APIError(413, f"The message is over {deps.settings.max_body_bytes} bytes.", code="request_too_large")
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise APIError(400, "Each message must be a JSON object.", code="invalid_json") from None
        if not isinstance(message, dict) or message.get("type") != "response.create":
            raise APIError(400, 'Send {"type": "response.create", …} messages.', code="invalid_event", param="type")
        body = {k: v for k, v in message.items() if k not in ("type", "stream", "stream_options")}
        continued = body.get("previous_response_id") if isinstance(body.get("previous_response_id"), str) else None
        exchange = await prepared(deps, principal, {**body, "stream": True}, recent)
        chat = exchange.chat

        async def read_body() -> dict[str, Any]:
            return chat

        answer = await run_request(
            deps.pipeline,
            RESPONSES.operation,
            RESPONSES.schema,
            read_body=read_body,
            headers=ws.headers,
            client_ip=client,
            principal=principal,
        )
    except APIError as exc:
        if continued is not None:
            recent.pop(continued, None)  # a failed continuation is not continued again
        return [_error_event(exc)]
    assert answer is not None and answer.stream is not None
    frames = exchange.stream(answer)
    stream = answer.stream
    try:
        for message in _messages(frames.head()):
            await ws.send_text(message)
        async for event in stream:
            for message in _messages(frames.feed(event, stream.take_buffered())):
                await ws.send_text(message)
        tail = _messages(await frames.tail(stream.completed))
    finally:
        await stream.aclose()
    if frames.error is not None and continued is not None:
        recent.pop(continued, None)
    if not tail:  # the upstream broke off: the turn still ends with an event the client knows
        tail = [_error_event(APIError(502, "The upstream stream broke off.", code="upstream_error"))]
    return tail
