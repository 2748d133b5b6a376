"""OpenAI's Responses API (`POST /v1/responses`, and batch lines of it) for every model: the request,
after the conversation it continues, runs as a chat request; the answer is written back as a Response
(whole, or as the Responses stream's events) and handed to `keep` (the route stores it) before the
client has its end."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from iir_gateway.answer import Answer, Event
from iir_gateway.errors import APIError
from iir_gateway.inbound.responses_answer import new_id, output_items, response_object
from iir_gateway.inbound.responses_request import chat_request, output_messages
from iir_gateway.inbound.responses_stream import ResponsesStreamEncoder
from iir_gateway.schemas import ChatCompletionRequest, validate_body
from iir_gateway.wire.sse import named_frames

# Keeps a finished Response with the conversation to continue from after it.
Keep = Callable[[dict[str, Any], list[dict[str, Any]]], Awaitable[None]]


class ResponseRequest(BaseModel):
    """What the gateway checks itself; the translation reads the rest."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    input: str | list[Any] = ""
    instructions: str | None = None
    previous_response_id: str | None = None
    store: bool = True
    stream: bool = False
    max_output_tokens: int | None = Field(default=None, ge=1)


class ResponsesFrames:
    """The pipeline's chat chunks as Responses stream events; the Response is kept once it is whole."""

    def __init__(self, encoder: ResponsesStreamEncoder, keep: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        self.encoder, self.keep = encoder, keep
        self.error: dict[str, Any] | None = None

    def head(self) -> bytes:
        return named_frames(self.encoder.start())

    def feed(self, event: Event, more: list[Event]) -> bytes:
        body = b""
        for chunk in (event, *more):
            data = chunk.json()
            if "error" in data:
                self.error = data["error"] or {}
                continue
            body += named_frames(self.encoder.feed(data))
        return body

    async def tail(self, completed: bool) -> bytes:
        if not completed and self.error is None:
            return b""
        tail = named_frames(self.encoder.end(self.error))
        if self.encoder.final is not None and self.error is None:
            await self.keep(self.encoder.final)
        return tail


class ResponsesExchange:
    """One Responses request: `history` is the conversation it continues; `keep` (if any) gets the
    finished Response; `scrubbed` are the kinds of secrets the route found in the request before it ran."""

    native = None

    def __init__(
        self, history: list[dict[str, Any]] | None = None, keep: Keep | None = None, scrubbed: set[str] | None = None
    ) -> None:
        self.id = new_id("resp")
        self.history = history or []
        self._keep = keep
        self.scrubbed = scrubbed or set()  # kinds of secrets the route found in the request before it ran
        self.body: dict[str, Any] = {}
        self.chat: dict[str, Any] = {}

    def request(self, body: dict[str, Any]) -> dict[str, Any]:
        validate_body(ResponseRequest, body)
        self.body = body
        self.chat = chat_request(body, self.history)
        return self.chat

    def headers(self, answer: Answer) -> dict[str, str]:
        headers = {**answer.headers, "x-iir-model": answer.model}
        if self.scrubbed:
            kinds = self.scrubbed | set(filter(None, headers.get("x-iir-scrubbed", "").split(",")))
            headers["x-iir-scrubbed"] = ",".join(sorted(kinds))
        return headers

    async def keep(self, response: dict[str, Any]) -> None:
        """Hands `response` to `keep` with the conversation after it: what was sent (without this
        request's instructions, which OpenAI does not carry over) and what came back."""
        if self._keep is None:
            return
        messages = self.chat["messages"][1:] if self.body.get("instructions") else self.chat["messages"]
        await self._keep(response, [*messages, *output_messages(response["output"])])

    def response(self, answer: Answer) -> dict[str, Any]:
        """The Response object for a whole answer."""
        assert answer.document is not None
        completion = answer.document.json()
        finish = ((completion.get("choices") or [{}])[0]).get("finish_reason")
        output = output_items(completion)
        return response_object(self.id, self.body, answer.model, output, completion.get("usage"), finish)

    async def document(self, answer: Answer) -> bytes:
        response = self.response(answer)
        await self.keep(response)
        return orjson.dumps(response)

    def stream(self, answer: Answer) -> ResponsesFrames:
        return ResponsesFrames(ResponsesStreamEncoder(self.id, self.body, answer.model), self.keep)


class _StandaloneExchange(ResponsesExchange):
    """A Responses request on its own (a batch line): it continues no stored response, and its Response
    says it is not stored."""

    def request(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("previous_response_id"):
            raise APIError(400, "A batch line cannot continue a stored response.", param="previous_response_id")
        return super().request({**body, "store": False})


class ResponsesProtocol:
    name = "openai-responses"
    operation = "chat/completions"
    schema = ChatCompletionRequest

    def exchange(self, headers: Mapping[str, str]) -> ResponsesExchange:
        """A request on its own (a batch line); the route builds the exchange of a stored conversation."""
        return _StandaloneExchange()

    def error(self, exc: APIError) -> Response:
        return exc.response()


RESPONSES = ResponsesProtocol()
