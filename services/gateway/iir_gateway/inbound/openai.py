"""OpenAI's chat completions, completions and embeddings: the pipeline's own form, so requests and
answers pass as they are, their bytes untouched. Only when the client sent its own `X-Request-ID` does
the answer (and each event of its stream) carry that id."""

from __future__ import annotations

from collections.abc import Mapping
from operator import attrgetter
from typing import Any

from starlette.responses import Response

from iir_common.logging import request_id_var
from iir_gateway.answer import Answer, Event
from iir_gateway.errors import APIError
from iir_gateway.inbound.base import StreamEncoder
from iir_gateway.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, InferenceRequest
from iir_gateway.wire.sse import DONE_FRAME, frame

_RAW = attrgetter("raw")


class _AsIs:
    """The exchange (and stream encoder) of a request whose answer passes unchanged: one for all."""

    native = None

    def request(self, body: dict[str, Any]) -> dict[str, Any]:
        return body

    def headers(self, answer: Answer) -> dict[str, str]:
        return {"x-iir-model": answer.model, **answer.headers}

    async def document(self, answer: Answer) -> bytes:
        assert answer.document is not None
        return answer.document.raw

    def stream(self, answer: Answer) -> StreamEncoder:
        return self

    def head(self) -> bytes:
        return b""

    def feed(self, event: Event, more: list[Event]) -> bytes:
        if not more:
            return b"data: " + event.raw + b"\n\n"
        return b"data: " + b"\n\ndata: ".join([event.raw, *map(_RAW, more)]) + b"\n\n"

    async def tail(self, completed: bool) -> bytes:
        return DONE_FRAME if completed else b""


_AS_IS = _AsIs()


def renamed(event: Event, answer_id: str) -> Event:
    """`event` with `answer_id` as its `id` (when it has one)."""
    data = event.data
    if not isinstance(data, dict) or "id" not in data or data["id"] == answer_id:
        return event
    return Event.of({**data, "id": answer_id})


class _Renamed(_AsIs):
    """The exchange of a request whose client chose the answer's id (its `X-Request-ID`)."""

    def __init__(self, answer_id: str) -> None:
        self.answer_id = answer_id

    async def document(self, answer: Answer) -> bytes:
        assert answer.document is not None
        return renamed(answer.document, self.answer_id).raw

    def feed(self, event: Event, more: list[Event]) -> bytes:
        return b"".join(frame(renamed(e, self.answer_id).raw) for e in (event, *more))


class OpenAIProtocol:
    """One OpenAI operation as clients call it."""

    def __init__(self, name: str, operation: str, schema: type[InferenceRequest]) -> None:
        self.name, self.operation, self.schema = name, operation, schema

    def exchange(self, headers: Mapping[str, str]) -> _AsIs:
        client_id = headers.get("x-request-id")
        if client_id and client_id == request_id_var.get():  # the client's, and valid (else IIR made one)
            return _Renamed(client_id)
        return _AS_IS

    def error(self, exc: APIError) -> Response:
        return exc.response()


CHAT = OpenAIProtocol("openai-chat", "chat/completions", ChatCompletionRequest)
COMPLETIONS = OpenAIProtocol("openai-completions", "completions", CompletionRequest)
EMBEDDINGS = OpenAIProtocol("openai-embeddings", "embeddings", EmbeddingRequest)
