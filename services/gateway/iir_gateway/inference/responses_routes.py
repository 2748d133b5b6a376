"""OpenAI's Responses API (`/v1/responses`) for every model: a request is checked, scrubbed and put after
the stored conversation it continues, then runs as a chat request through the pipeline (keys, limits,
scrubbing, cache, fallbacks, usage); its Response (`inbound.responses`) is kept when `store` is true.
Stored responses are read and deleted here too."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError
from starlette.responses import Response

from iir_gateway.accounting.token_estimate import estimate_tokens
from iir_gateway.conversations.store import ResponseStore, StoredResponse
from iir_gateway.errors import APIError
from iir_gateway.inbound.responses import RESPONSES, ResponseRequest, ResponsesExchange
from iir_gateway.inbound.responses_answer import new_id
from iir_gateway.inbound.responses_compaction import compaction
from iir_gateway.inbound.responses_request import input_messages
from iir_gateway.inference.entry import BodyLimit, serve
from iir_gateway.pipeline.pipeline import Pipeline
from iir_gateway.pipeline.steps.authenticate import KeyCheck
from iir_gateway.principal import Principal
from iir_gateway.schemas import validate_body
from iir_gateway.scrubbing.policy import Scrubbing
from iir_gateway.server.bodies import client_ip, json_response, page_response, read_json_object

log = logging.getLogger(__name__)


class AccessCheck(Protocol):
    def check_access(self, model: str, principal: Principal) -> object:
        """APIError 403/404 when `principal` may not call `model`."""
        ...


class CompactRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    input: str | list[Any] | None = None
    previous_response_id: str | None = None
    instructions: str | None = None
    prompt_cache_key: str | None = None


class ResponsesDeps(Protocol):
    """What the Responses routes read."""

    @property
    def pipeline(self) -> Pipeline: ...
    @property
    def auth(self) -> KeyCheck: ...
    @property
    def responses(self) -> ResponseStore: ...
    @property
    def scrubbing(self) -> Scrubbing: ...
    @property
    def directory(self) -> AccessCheck: ...
    @property
    def settings(self) -> BodyLimit: ...


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


def _previous_not_found(response_id: str) -> APIError:
    return APIError(
        400,
        f"Previous response with id '{response_id}' not found.",
        code="previous_response_not_found",
        param="previous_response_id",
    )


def _not_found(response_id: str) -> APIError:
    return APIError(404, f"Response with id '{response_id}' not found.", code="response_not_found")


async def prepared(
    deps: ResponsesDeps, principal: Principal, body: dict[str, Any], recent: dict[str, Any] | None = None
) -> ResponsesExchange:
    """The exchange of one Responses request, its chat request made: checked, scrubbed (what is echoed
    and stored is the scrubbed request; in block mode a secret anywhere in it is a 400 before anything
    runs or is kept), after the conversation it continues. `recent`: a WebSocket's own most recent
    response (id → conversation), looked at before the store and replaced by this one's when it ends."""
    req = validate_body(ResponseRequest, body)
    body, scrubbed = deps.scrubbing.request(body, deps.scrubbing.mode(principal.scrub_mode))
    if req.store:  # refused before it runs when nothing more can be stored
        await deps.responses.check_quota(principal)
    history: list[dict[str, Any]] = []
    if req.previous_response_id:
        known = recent.get(req.previous_response_id) if recent is not None else None
        if known is None:
            previous = await deps.responses.get(req.previous_response_id, principal)
            if previous is None:
                raise _previous_not_found(req.previous_response_id)
            known = previous.history
        history = known
    store = deps.responses

    async def keep(response: dict[str, Any], history_now: list[dict[str, Any]]) -> None:
        if recent is not None:
            recent.clear()
            recent[response["id"]] = history_now
        if not req.store:
            return
        stored = StoredResponse(principal.key_id, response, _input_items(body), history_now)
        try:
            await store.put(principal, stored)
        except RedisError as exc:  # the answer was made (and billed): it is sent, unstored
            log.warning("response not stored", extra={"response_id": response["id"], "error": repr(exc)[:200]})

    exchange = ResponsesExchange(history, keep if req.store or recent is not None else None, scrubbed)
    exchange.request(body)
    return exchange


def router(deps: ResponsesDeps) -> APIRouter:
    api = APIRouter(tags=["Responses"])

    async def caller(request: Request) -> Principal:
        return await deps.auth.authenticate(request.headers, client_ip(request))

    @api.post("/v1/responses", summary="Create a response (OpenAI Responses API), streamed or not, from any model")
    async def create_response(request: Request) -> Response:
        principal = await caller(request)
        body = await read_json_object(request, deps.settings.max_body_bytes)
        exchange = await prepared(deps, principal, body)
        chat = exchange.chat

        async def read_body() -> dict[str, Any]:
            return chat

        return await serve(
            deps.pipeline,
            RESPONSES,
            exchange,
            read_body,
            request.headers,
            client_ip(request),
            request.receive,
            principal,
        )

    @api.post("/v1/responses/compact", summary="Fold a conversation into one item a later input starts from")
    async def compact(request: Request) -> Response:
        principal = await caller(request)
        body = await read_json_object(request, deps.settings.max_body_bytes)
        req = validate_body(CompactRequest, body)
        deps.directory.check_access(req.model, principal)
        body, _ = deps.scrubbing.request(body, deps.scrubbing.mode(principal.scrub_mode))
        history: list[dict[str, Any]] = []
        if req.previous_response_id:
            previous = await deps.responses.get(req.previous_response_id, principal)
            if previous is None:
                raise _previous_not_found(req.previous_response_id)
            history = previous.history
        messages = history + input_messages(body.get("input") or [])
        prompt = estimate_tokens({"model": req.model, "messages": messages}, 0).prompt
        return json_response(compaction(messages, prompt))

    @api.get("/v1/responses/{response_id}", summary="A stored response")
    async def get_response(response_id: str, request: Request) -> Response:
        stored = await deps.responses.get(response_id, await caller(request))
        if stored is None:
            raise _not_found(response_id)
        return json_response(stored.response)

    @api.delete("/v1/responses/{response_id}", summary="Delete a stored response")
    async def delete_response(response_id: str, request: Request) -> Response:
        if not await deps.responses.delete(response_id, await caller(request)):
            raise _not_found(response_id)
        return json_response({"id": response_id, "object": "response", "deleted": True})

    @api.get("/v1/responses/{response_id}/input_items", summary="The input items of a stored response")
    async def input_items(response_id: str, request: Request) -> Response:
        stored = await deps.responses.get(response_id, await caller(request))
        if stored is None:
            raise _not_found(response_id)
        return page_response(stored.input_items, False)

    return api
