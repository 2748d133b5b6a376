"""The OpenAI-compatible surface: chat completions, completions, embeddings, models."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from iir_gateway.inference.entry import serve_inference
from iir_gateway.providers.local.provider import model_not_found
from iir_gateway.runtime import Runtime
from iir_gateway.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, openapi_body
from iir_gateway.server.bodies import client_ip, read_json_object

router = APIRouter(tags=["OpenAI"])


async def _serve(request: Request, schema: type[Any], path: str) -> Response:
    # Normally answered by the ASGI fast path (inference/fastpath.py); kept for the docs and as a fallback.
    gw: Runtime = request.app.state.gateway
    return await serve_inference(
        request.app.state.pipeline,
        request.headers,
        client_ip(request),
        lambda: read_json_object(request, gw.settings.max_body_bytes),
        schema,
        path,
        request.receive,
    )


@router.post(
    "/v1/chat/completions", summary="Create a chat completion", openapi_extra=openapi_body(ChatCompletionRequest)
)
async def chat_completions(request: Request) -> Response:
    return await _serve(request, ChatCompletionRequest, "chat/completions")


@router.post("/v1/completions", summary="Create a completion", openapi_extra=openapi_body(CompletionRequest))
async def completions(request: Request) -> Response:
    return await _serve(request, CompletionRequest, "completions")


@router.post("/v1/embeddings", summary="Create embeddings", openapi_extra=openapi_body(EmbeddingRequest))
async def embeddings(request: Request) -> Response:
    return await _serve(request, EmbeddingRequest, "embeddings")


@router.get("/v1/models", summary="List the models this key can call now")
async def list_models(request: Request) -> Response:
    gw: Runtime = request.app.state.gateway
    principal = await gw.auth.authenticate(request.headers, client_ip(request))
    return Response(orjson.dumps({"object": "list", "data": gw.list_models(principal)}), media_type="application/json")


@router.get("/v1/models/{model:path}", summary="Retrieve a model")
async def get_model(model: str, request: Request) -> Response:
    gw: Runtime = request.app.state.gateway
    principal = await gw.auth.authenticate(request.headers, client_ip(request))
    for card in gw.list_models(principal):
        if card["id"] == model:
            return Response(orjson.dumps(card), media_type="application/json")
    raise model_not_found(model)
