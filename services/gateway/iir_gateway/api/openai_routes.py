"""The OpenAI-compatible surface: chat completions, completions, models."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from iir_common.logging import request_id_var
from iir_gateway.api.requests import client_ip, read_json_object
from iir_gateway.gateway import Gateway
from iir_gateway.providers.local import model_not_found
from iir_gateway.schemas import ChatCompletionRequest, CompletionRequest, openapi_body, validate_body

router = APIRouter(tags=["OpenAI"])


async def _proxy(request: Request, schema: type[ChatCompletionRequest] | type[CompletionRequest],
                 path: str) -> Response:
    gw: Gateway = request.app.state.gateway
    principal = await gw.auth.authenticate(request.headers, client_ip(request))
    body: dict[str, Any] = await read_json_object(request, gw.settings.max_body_bytes)
    req = validate_body(schema, body)
    public_model = req.model
    provider, upstream = gw.route(public_model, principal)
    body["model"] = upstream.model
    status = "error"
    try:
        response = await gw.upstream.forward(provider, upstream, path, orjson.dumps(body),
                                             stream=bool(req.stream), request_id=request_id_var.get() or "",
                                             public_model=public_model)
        status = str(response.status_code)
        return response
    finally:
        gw.metrics.model_requests.labels(public_model, provider, status).inc()


@router.post("/v1/chat/completions", summary="Create a chat completion",
             openapi_extra=openapi_body(ChatCompletionRequest))
async def chat_completions(request: Request) -> Response:
    return await _proxy(request, ChatCompletionRequest, "chat/completions")


@router.post("/v1/completions", summary="Create a completion", openapi_extra=openapi_body(CompletionRequest))
async def completions(request: Request) -> Response:
    return await _proxy(request, CompletionRequest, "completions")


@router.get("/v1/models", summary="List the models this key can call now")
async def list_models(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    principal = await gw.auth.authenticate(request.headers, client_ip(request))
    return Response(orjson.dumps({"object": "list", "data": gw.list_models(principal)}),
                    media_type="application/json")


@router.get("/v1/models/{model:path}", summary="Retrieve a model")
async def get_model(model: str, request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    principal = await gw.auth.authenticate(request.headers, client_ip(request))
    for card in gw.list_models(principal):
        if card["id"] == model:
            return Response(orjson.dumps(card), media_type="application/json")
    raise model_not_found(model)
