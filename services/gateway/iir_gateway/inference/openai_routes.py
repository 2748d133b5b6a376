"""The OpenAI models list. (Chat completions, completions and embeddings: `inbound.routes`, served by
the fast path.)"""

from __future__ import annotations

from typing import Any, Protocol

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from iir_gateway.pipeline.steps.authenticate import KeyCheck
from iir_gateway.principal import Principal
from iir_gateway.providers.local.provider import model_not_found
from iir_gateway.server.bodies import client_ip


class ModelsDeps(Protocol):
    """What the models routes read."""

    @property
    def auth(self) -> KeyCheck: ...
    def list_models(self, principal: Principal) -> list[dict[str, Any]]: ...


def router(deps: ModelsDeps) -> APIRouter:
    api = APIRouter(tags=["OpenAI"])

    @api.get("/v1/models", summary="List the models this key can call now")
    async def list_models(request: Request) -> Response:
        principal = await deps.auth.authenticate(request.headers, client_ip(request))
        body = orjson.dumps({"object": "list", "data": deps.list_models(principal)})
        return Response(body, media_type="application/json")

    @api.get("/v1/models/{model:path}", summary="Retrieve a model")
    async def get_model(model: str, request: Request) -> Response:
        principal = await deps.auth.authenticate(request.headers, client_ip(request))
        for card in deps.list_models(principal):
            if card["id"] == model:
                return Response(orjson.dumps(card), media_type="application/json")
        raise model_not_found(model)

    return api
