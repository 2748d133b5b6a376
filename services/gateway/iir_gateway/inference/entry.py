"""The inference endpoints' edge: one request in, through the pipeline, its answer out as ASGI."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive

from iir_common.logging import request_id_var
from iir_gateway.answer import Answer
from iir_gateway.inference.asgi_answer import to_response, with_id
from iir_gateway.pipeline.context import BodyReader
from iir_gateway.pipeline.entry import run_request
from iir_gateway.pipeline.pipeline import Pipeline
from iir_gateway.principal import Principal
from iir_gateway.schemas import ChatCompletionRequest, InferenceRequest
from iir_gateway.server.bodies import client_ip
from iir_gateway.wire.base import NativeBody

# What a client that went away gets (nobody reads it; the access log and metrics do).
CLIENT_CLOSED = 499


async def serve_inference(
    pipeline: Pipeline,
    headers: Mapping[str, str],
    client_ip: str,
    read_body: BodyReader,
    schema: type[InferenceRequest],
    endpoint: str,
    receive: Receive | None = None,
) -> Response:
    """Serves one request to `endpoint` (`chat/completions`, `completions`, `embeddings`) as OpenAI does."""
    answer = await run_request(
        pipeline, endpoint, schema, read_body=read_body, headers=headers, client_ip=client_ip, receive=receive
    )
    if answer is None:
        return Response(status_code=CLIENT_CLOSED)
    client_id = headers.get("x-request-id")
    if client_id and client_id == request_id_var.get():  # the client's, and valid (else IIR made one)
        answer = with_id(answer, client_id)
    return to_response(answer)


async def run_chat(
    request: Request, read_body: BodyReader, principal: Principal | None = None, native: NativeBody | None = None
) -> Answer | None:
    """A chat request that another API was translated into (Messages, Responses), through the pipeline;
    `native`: the request as the client wrote it, for an upstream of that API."""
    pipeline: Pipeline = request.app.state.pipeline
    return await run_request(
        pipeline,
        "chat/completions",
        ChatCompletionRequest,
        read_body=read_body,
        headers=request.headers,
        client_ip=client_ip(request),
        principal=principal,
        native=native,
        receive=request.receive,
    )
