"""Anthropic's Messages API (`POST /v1/messages`) for every model: the request runs as a chat request,
the answer is written back as Messages writes it, errors in Anthropic's shape with a `request-id`
header. An Anthropic model gets the request as the client wrote it and answers in its own words, passed
on untouched (when nothing was scrubbed)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from iir_common.logging import request_id_var
from iir_gateway.accounting.token_estimate import estimate_tokens
from iir_gateway.answer import Answer, Event
from iir_gateway.errors import APIError
from iir_gateway.inbound.messages_answer import message_response
from iir_gateway.inbound.messages_request import chat_request
from iir_gateway.inbound.messages_stream import MessagesStreamEncoder
from iir_gateway.schemas import ChatCompletionRequest, validate_body
from iir_gateway.wire.base import NativeBody
from iir_gateway.wire.sse import named_frames


class MessagesRequest(BaseModel):
    """What the Messages API requires; the rest is read by the translation."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    messages: list[Any]


def _native_frame(payload: bytes) -> bytes:
    kind = orjson.loads(payload).get("type", "message")
    return b"event: %s\ndata: %s\n\n" % (str(kind).encode(), payload)


class MessagesFrames:
    """The pipeline's OpenAI chunks as Messages stream events (`event: <type>` and `data: <json>`), or an
    Anthropic model's own events untouched (decided by the first event)."""

    def __init__(self, encoder: MessagesStreamEncoder) -> None:
        self.encoder = encoder
        self.native: bool | None = None

    def head(self) -> bytes:
        return b""

    def feed(self, event: Event, more: list[Event]) -> bytes:
        if self.native is None:
            self.native = event.native is not None
        chunks = (event, *more)
        if not self.native:
            return b"".join(named_frames(self.encoder.feed(c.json())) for c in chunks)
        # The gateway's own events (a stream that broke off) are Anthropic's `error` events.
        return b"".join(
            b"".join(map(_native_frame, c.native)) if c.native else named_frames(self.encoder.feed(c.json()))
            for c in chunks
            if c.native or "error" in c.json()
        )

    async def tail(self, completed: bool) -> bytes:
        return named_frames(self.encoder.end()) if completed and not self.native else b""


class MessagesExchange:
    """One Messages request: what the client asked (kept for the answer) and its chat translation."""

    def __init__(self) -> None:
        self.asked: dict[str, Any] = {}
        self.native = NativeBody("anthropic", self.asked)  # sent as it is to an Anthropic model (after scrubbing)
        self.translated: dict[str, Any] = {}

    def request(self, body: dict[str, Any]) -> dict[str, Any]:
        validate_body(MessagesRequest, body, named=True)
        self.asked.update(body)
        self.translated = chat_request(body)
        return dict(self.translated)  # the pipeline's own copy (scrubbing may replace it)

    def _stops(self) -> list[str]:
        return list(self.asked.get("stop_sequences") or [])

    def headers(self, answer: Answer) -> dict[str, str]:
        return {**answer.headers, "x-iir-model": answer.model, "request-id": request_id_var.get() or ""}

    async def document(self, answer: Answer) -> bytes:
        assert answer.document is not None
        if answer.document.native:  # Anthropic's own answer
            return answer.document.native[0]
        return orjson.dumps(message_response(answer.document.json(), str(self.asked["model"]), self._stops()))

    def stream(self, answer: Answer) -> MessagesFrames:
        estimate = estimate_tokens(self.translated, 0).prompt
        return MessagesFrames(MessagesStreamEncoder(str(self.asked["model"]), self._stops(), estimate))


class MessagesProtocol:
    name = "anthropic-messages"
    operation = "chat/completions"
    schema = ChatCompletionRequest

    def exchange(self, headers: Mapping[str, str]) -> MessagesExchange:
        return MessagesExchange()

    def error(self, exc: APIError) -> Response:
        response = exc.response(anthropic=True)
        response.headers["request-id"] = request_id_var.get() or ""
        return response


MESSAGES = MessagesProtocol()
