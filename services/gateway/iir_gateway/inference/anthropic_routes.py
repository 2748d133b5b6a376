"""The Anthropic Messages API (`POST /v1/messages`, `POST /v1/messages/count_tokens`) for every model:
the request is translated to the gateway's OpenAI form and runs through the same pipeline as chat
(keys, limits, scrubbing, cache, fallbacks, usage); the answer is translated back. Errors have
Anthropic's shape and a `request-id` header."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response
from starlette.types import Send

from iir_common.logging import request_id_var
from iir_gateway.accounting.token_estimate import estimate_tokens
from iir_gateway.answer import EventStream
from iir_gateway.errors import APIError
from iir_gateway.inference.asgi_answer import EventStreamResponse, named_frames
from iir_gateway.inference.entry import CLIENT_CLOSED, run_chat
from iir_gateway.routing.auto_router import is_auto
from iir_gateway.runtime import Runtime
from iir_gateway.server.bodies import client_ip, read_json_object
from iir_gateway.wire.anthropic_inbound import MessagesStreamEncoder, chat_request, message_response
from iir_gateway.wire.base import NativeBody

router = APIRouter(tags=["Anthropic Messages"])


class MessagesRequest(BaseModel):
    """What the Messages API requires; the rest is read by the translation."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    messages: list[Any]


class CountTokensRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    messages: list[Any]


def _error(exc: APIError) -> Response:
    response = exc.response(anthropic=True)
    response.headers["request-id"] = request_id_var.get() or ""
    return response


def _checked(schema: type[BaseModel], body: dict[str, Any]) -> None:
    try:
        schema.model_validate(body)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in err["loc"])
        raise APIError(400, f"{field}: {err['msg']}", param=field) from None


def _native_frame(payload: bytes) -> bytes:
    kind = orjson.loads(payload).get("type", "message")
    return b"event: %s\ndata: %s\n\n" % (str(kind).encode(), payload)


class MessagesStreamResponse(EventStreamResponse):
    """The pipeline's OpenAI chunks as Messages stream events (`event: <type>` and `data: <json>`)."""

    def __init__(self, stream: EventStream, headers: dict[str, str], encoder: MessagesStreamEncoder) -> None:
        super().__init__(stream, headers)
        self.encoder = encoder

    async def _send_events(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})

        native: bool | None = None  # Anthropic's own events, untouched (decided by the first event)
        async for event in self.stream:
            chunks = [event, *self.stream.take_buffered()]
            if native is None:
                native = event.native is not None
            if native:
                # The gateway's own events (a stream that broke off) are Anthropic's `error` events.
                body = b"".join(
                    b"".join(map(_native_frame, c.native)) if c.native else named_frames(self.encoder.feed(c.json()))
                    for c in chunks
                    if c.native or "error" in c.json()
                )
            else:
                body = b"".join(named_frames(self.encoder.feed(c.json())) for c in chunks)
            if body:
                await send({"type": "http.response.body", "body": body, "more_body": True})
        tail = named_frames(self.encoder.end()) if self.stream.completed and not native else b""
        await send({"type": "http.response.body", "body": tail, "more_body": False})


@router.post("/v1/messages", summary="Anthropic Messages API: a message, streamed or not, from any model")
async def messages(request: Request) -> Response:
    gw: Runtime = request.app.state.gateway
    asked: dict[str, Any] = {}
    native = NativeBody("anthropic", asked)  # sent as it is to an Anthropic model (after scrubbing)
    translated: dict[str, Any] = {}

    async def read_body() -> dict[str, Any]:
        body = await read_json_object(request, gw.settings.max_body_bytes)
        _checked(MessagesRequest, body)
        asked.update(body)
        translated.update(chat_request(body))
        return dict(translated)  # the pipeline's own copy (scrubbing may replace it)

    try:
        answer = await run_chat(request, read_body, native=native)
    except APIError as exc:
        return _error(exc)
    if answer is None:
        return Response(status_code=CLIENT_CLOSED)
    headers = {**answer.headers, "x-iir-model": answer.model, "request-id": request_id_var.get() or ""}
    stops = list(asked.get("stop_sequences") or [])
    if answer.stream is not None:
        estimate = estimate_tokens(translated, 0).prompt
        encoder = MessagesStreamEncoder(str(asked["model"]), stops, estimate)
        return MessagesStreamResponse(answer.stream, headers, encoder)
    assert answer.document is not None
    if answer.document.native:  # Anthropic's own answer
        return Response(answer.document.native[0], media_type="application/json", headers=headers)
    message = message_response(answer.document.json(), str(asked["model"]), stops)
    return Response(orjson.dumps(message), media_type="application/json", headers=headers)


@router.post("/v1/messages/count_tokens", summary="Anthropic Messages API: the input tokens of a request")
async def count_tokens(request: Request) -> Response:
    gw: Runtime = request.app.state.gateway
    try:
        principal = await gw.auth.authenticate(request.headers, client_ip(request))
        body = await read_json_object(request, gw.settings.max_body_bytes)
        _checked(CountTokensRequest, body)
        translated = chat_request({k: v for k, v in body.items() if k != "max_tokens"})  # the input only
        if not is_auto(translated["model"]):
            gw.directory.check_access(translated["model"], principal)
    except APIError as exc:
        return _error(exc)
    tokens = estimate_tokens(translated, 0).prompt
    return Response(orjson.dumps({"input_tokens": tokens}), media_type="application/json")
