"""The inference routes served straight from ASGI.

FastAPI's routing, dependency solving and middleware stack cost about 40% of the gateway's CPU per
request (profiled with py-spy); these POST routes skip them and call the same `serve_inference`.
Everything else, including other methods on these paths, goes to FastAPI.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from fastapi import FastAPI
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from iir_gateway.errors import APIError
from iir_gateway.inference.entry import serve_inference
from iir_gateway.pipeline.pipeline import Pipeline
from iir_gateway.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from iir_gateway.server.bodies import read_asgi_json

_ROUTES: dict[str, tuple[type[Any], str]] = {
    "/v1/chat/completions": (ChatCompletionRequest, "chat/completions"),
    "/v1/completions": (CompletionRequest, "completions"),
    "/v1/embeddings": (EmbeddingRequest, "embeddings"),
}


class InferenceFastPath:
    def __init__(self, app: FastAPI, pipeline: Pipeline, max_body_bytes: int) -> None:
        self.app = app
        self.pipeline = pipeline
        self.max_body_bytes = max_body_bytes
        # `scope["route"].path` names the route in metrics, as for FastAPI's own routes.
        self.routes: dict[str, tuple[Any, str, Any]] = {p: (*v, SimpleNamespace(path=p)) for p, v in _ROUTES.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = self.routes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if target is None:
            await self.app(scope, receive, send)
            return
        schema, path, route = target
        scope["route"] = route
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        client = scope.get("client")
        limit = self.max_body_bytes
        try:
            response = await serve_inference(
                self.pipeline,
                headers,
                client[0] if client else "",
                lambda: read_asgi_json(receive, limit),
                schema,
                path,
                receive,
            )
        except APIError as exc:
            response = exc.response()
        except ClientDisconnect:
            return
        await response(scope, receive, send)
