"""The one route table of inference: each public path, the protocol it speaks, how the HTTP edge serves
it and whether a batch may run it. The ASGI fast path, the OpenAPI document and batches read it."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from iir_gateway.inbound.base import InboundProtocol
from iir_gateway.inbound.registry import protocol_for
from iir_gateway.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest


@dataclass(frozen=True, slots=True)
class Route:
    path: str
    protocol: InboundProtocol
    summary: str  # for the OpenAPI document
    tag: str
    documented_body: type[BaseModel] | None = None  # the request body the OpenAPI document shows
    fast: bool = True  # served by the ASGI fast path (else by a FastAPI route of its own)
    batch: bool = True  # a batch's endpoint may be this path

    @property
    def name(self) -> str:
        """The route's name (its OpenAPI operation id's start): `/v1/chat/completions` → `chat_completions`."""
        return self.path.removeprefix("/v1/").replace("/", "_")


ROUTES: tuple[Route, ...] = (
    Route(
        "/v1/chat/completions",
        protocol_for("openai-chat"),
        "Create a chat completion",
        "OpenAI",
        ChatCompletionRequest,
    ),
    Route("/v1/completions", protocol_for("openai-completions"), "Create a completion", "OpenAI", CompletionRequest),
    Route("/v1/embeddings", protocol_for("openai-embeddings"), "Create embeddings", "OpenAI", EmbeddingRequest),
    Route(
        "/v1/responses",
        protocol_for("openai-responses"),
        "Create a response (OpenAI Responses API), streamed or not, from any model",
        "Responses",
        fast=False,  # it continues and stores conversations: responses_routes
    ),
    Route(
        "/v1/messages",
        protocol_for("anthropic-messages"),
        "Anthropic Messages API: a message, streamed or not, from any model",
        "Anthropic Messages",
        batch=False,
    ),
)


def fast_routes() -> dict[str, Route]:
    """The routes the ASGI fast path serves, by path."""
    return {route.path: route for route in ROUTES if route.fast}


def batch_endpoints() -> dict[str, InboundProtocol]:
    """The protocol of each path a batch may run, by path."""
    return {r.path: r.protocol for r in ROUTES if r.batch}
