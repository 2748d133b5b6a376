"""OpenAI's Responses API (`/v1/responses`) for every model: the request, after the stored conversation
it continues, is translated to a chat request and runs through the same pipeline as chat (keys, limits,
scrubbing, cache, fallbacks, usage); the answer is translated back, and kept when `store` is true."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError
from starlette.responses import Response
from starlette.types import Send

from iir_gateway.answer import EventStream
from iir_gateway.conversations.store import ResponseStore, StoredResponse
from iir_gateway.errors import APIError
from iir_gateway.inference.asgi_answer import EventStreamResponse, named_frames
from iir_gateway.inference.entry import CLIENT_CLOSED, run_chat
from iir_gateway.principal import Principal
from iir_gateway.runtime import Runtime
from iir_gateway.schemas import validate_body
from iir_gateway.server.bodies import client_ip, read_json_object
from iir_gateway.wire.openai_responses import (
    ResponsesStreamEncoder,
    chat_request,
    new_id,
    output_items,
    output_messages,
    response_object,
)

router = APIRouter(tags=["Responses"])
log = logging.getLogger(__name__)


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


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _input_items(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's input as items with ids, as `GET /v1/responses/{id}/input_items` lists them."""
    raw = body.get("input")
    if isinstance(raw, str):
        raw = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": raw}]}] if raw else []
    items = []
    for item in raw or []:
        kind = item.get("type", "message")
        prefix = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}.get(kind, "item")
        items.append({"id": new_id(prefix), **item, "type": kind})
    return items


def _history(chat: dict[str, Any], body: dict[str, Any], output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation to continue from: what was sent (without this request's instructions, which
    OpenAI does not carry over) and what came back."""
    messages = chat["messages"][1:] if body.get("instructions") else chat["messages"]
    return [*messages, *output_messages(output)]


async def _caller(request: Request) -> tuple[Runtime, Principal]:
    gw: Runtime = request.app.state.gateway
    return gw, await gw.auth.authenticate(request.headers, client_ip(request))


def _not_found(response_id: str) -> APIError:
    return APIError(404, f"Response with id '{response_id}' not found.", code="response_not_found")


class ResponsesStreamResponse(EventStreamResponse):
    """The pipeline's chat chunks as Responses stream events; the Response is stored once it is whole."""

    def __init__(
        self,
        stream: EventStream,
        headers: dict[str, str],
        encoder: ResponsesStreamEncoder,
        keep: Any,
    ) -> None:
        super().__init__(stream, headers)
        self.encoder, self.keep = encoder, keep

    async def _send_events(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})

        await send({"type": "http.response.body", "body": named_frames(self.encoder.start()), "more_body": True})
        error: dict[str, Any] | None = None
        async for event in self.stream:
            body = b""
            for chunk in (event, *self.stream.take_buffered()):
                data = chunk.json()
                if "error" in data:
                    error = data["error"] or {}
                    continue
                body += named_frames(self.encoder.feed(data))
            if body:
                await send({"type": "http.response.body", "body": body, "more_body": True})
        tail = b""
        if self.stream.completed or error is not None:
            tail = named_frames(self.encoder.end(error))
            if self.encoder.final is not None and error is None:
                await self.keep(self.encoder.final)
        await send({"type": "http.response.body", "body": tail, "more_body": False})


@router.post("/v1/responses", summary="Create a response (OpenAI Responses API), streamed or not, from any model")
async def create_response(request: Request) -> Response:
    gw, principal = await _caller(request)
    body = await read_json_object(request, gw.settings.max_body_bytes)
    req = validate_body(ResponseRequest, body)
    # What is echoed and stored (input items, instructions, tools, metadata) is the scrubbed request;
    # in block mode a secret anywhere in it is a 400 before anything runs or is kept.
    body, scrubbed = gw.scrubbing.request(body, gw.scrubbing.mode(principal.scrub_mode))
    if req.store:  # refused before it runs when nothing more can be stored
        await gw.responses.check_quota(principal)
    history: list[dict[str, Any]] = []
    if req.previous_response_id:
        previous = await gw.responses.get(req.previous_response_id, principal)
        if previous is None:
            raise APIError(
                400,
                f"Previous response with id '{req.previous_response_id}' not found.",
                code="previous_response_not_found",
                param="previous_response_id",
            )
        history = previous.history
    chat = chat_request(body, history)

    async def read_body() -> dict[str, Any]:
        return chat

    answer = await run_chat(request, read_body, principal)
    if answer is None:
        return Response(status_code=CLIENT_CLOSED)
    response_id = new_id("resp")
    store: ResponseStore = gw.responses
    input_items = _input_items(body)

    async def keep(response: dict[str, Any]) -> None:
        if not req.store:
            return
        history_now = _history(chat, body, response["output"])
        try:
            await store.put(principal, StoredResponse(principal.key_id, response, input_items, history_now))
        except RedisError as exc:  # the answer was made (and billed): it is sent, unstored
            log.warning("response not stored", extra={"response_id": response["id"], "error": repr(exc)[:200]})

    headers = {**answer.headers, "x-iir-model": answer.model}
    if scrubbed:
        kinds = scrubbed | set(filter(None, headers.get("x-iir-scrubbed", "").split(",")))
        headers["x-iir-scrubbed"] = ",".join(sorted(kinds))
    if answer.stream is not None:
        encoder = ResponsesStreamEncoder(response_id, body, answer.model)
        return ResponsesStreamResponse(answer.stream, headers, encoder, keep)
    assert answer.document is not None
    completion = answer.document.json()
    finish = ((completion.get("choices") or [{}])[0]).get("finish_reason")
    response = response_object(
        response_id, body, answer.model, output_items(completion), completion.get("usage"), finish
    )
    await keep(response)
    return Response(orjson.dumps(response), media_type="application/json", headers=headers)


@router.get("/v1/responses/{response_id}", summary="A stored response")
async def get_response(response_id: str, request: Request) -> Response:
    gw, principal = await _caller(request)
    stored = await gw.responses.get(response_id, principal)
    if stored is None:
        raise _not_found(response_id)
    return _json(stored.response)


@router.delete("/v1/responses/{response_id}", summary="Delete a stored response")
async def delete_response(response_id: str, request: Request) -> Response:
    gw, principal = await _caller(request)
    if not await gw.responses.delete(response_id, principal):
        raise _not_found(response_id)
    return _json({"id": response_id, "object": "response", "deleted": True})


@router.get("/v1/responses/{response_id}/input_items", summary="The input items of a stored response")
async def input_items(response_id: str, request: Request) -> Response:
    gw, principal = await _caller(request)
    stored = await gw.responses.get(response_id, principal)
    if stored is None:
        raise _not_found(response_id)
    items = stored.input_items
    return _json(
        {
            "object": "list",
            "data": items,
            "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None,
            "has_more": False,
        }
    )
