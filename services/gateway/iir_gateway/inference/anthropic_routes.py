"""`POST /v1/messages/count_tokens` of Anthropic's Messages API: the input tokens of a request, for a model
the key may call and IIR knows (404 `not_found_error` otherwise): as a local model's replica counts them
(vLLM's `/tokenize`, the count `messages.create` then reports), else as the gateway estimates them.
(`POST /v1/messages` itself: `inbound.messages`, served by the fast path.) Errors have Anthropic's shape
and a `request-id` header."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from iir_gateway.accounting.token_estimate import estimate_tokens
from iir_gateway.errors import APIError
from iir_gateway.inbound.messages import MESSAGES
from iir_gateway.inbound.messages_request import chat_request
from iir_gateway.inference.entry import BodyLimit
from iir_gateway.pipeline.steps.authenticate import KeyCheck
from iir_gateway.principal import Principal
from iir_gateway.routing.auto_router import is_auto
from iir_gateway.schemas import validate_body
from iir_gateway.server.bodies import client_ip, read_json_object
from iir_gateway.upstream.target import Upstream


class CountTokensRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    messages: list[Any]


class Known(Protocol):
    def known(self) -> bool: ...
    def counter(self) -> Upstream | None: ...


class TokenCounter(Protocol):
    async def count_tokens(self, upstream: Upstream, body: Mapping[str, Any]) -> int | None: ...


class AccessCheck(Protocol):
    def check_access(self, model: str, principal: Principal) -> Known:
        """APIError 403/404 when `principal` may not call `model`."""
        ...


class CountTokensDeps(Protocol):
    """What the route reads."""

    @property
    def auth(self) -> KeyCheck: ...
    @property
    def directory(self) -> AccessCheck: ...
    @property
    def settings(self) -> BodyLimit: ...
    @property
    def upstream(self) -> TokenCounter: ...


def router(deps: CountTokensDeps) -> APIRouter:
    api = APIRouter(tags=["Anthropic Messages"])

    @api.post("/v1/messages/count_tokens", summary="Anthropic Messages API: the input tokens of a request")
    async def count_tokens(request: Request) -> Response:
        try:
            principal = await deps.auth.authenticate(request.headers, client_ip(request))
            body = await read_json_object(request, deps.settings.max_body_bytes)
            validate_body(CountTokensRequest, body, named=True)
            translated = chat_request({k: v for k, v in body.items() if k != "max_tokens"})  # the input only
            model = translated["model"]
            served = None if is_auto(model) else deps.directory.check_access(model, principal)
            if served is not None and not served.known():
                # As Anthropic answers for a model it has not: a name only passed through is not counted.
                raise APIError(404, f"model: {model}", code="model_not_found", param="model")
        except APIError as exc:
            return MESSAGES.error(exc)
        counter = served.counter() if served is not None else None
        tokens = await deps.upstream.count_tokens(counter, translated) if counter is not None else None
        if tokens is None:
            tokens = estimate_tokens(translated, 0).prompt
        return Response(orjson.dumps({"input_tokens": tokens}), media_type="application/json")

    return api
