"""The inference endpoints' edge: one request in, through the pipeline, its answer out as ASGI."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive

from iir_common.logging import request_id_var
from iir_gateway.answer import Answer
from iir_gateway.inference.asgi_answer import to_response, with_id
from iir_gateway.pipeline.context import BodyReader, RequestContext
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
    answer = await run_inference(pipeline, headers, client_ip, read_body, schema, endpoint, receive)
    if answer is None:
        return Response(status_code=CLIENT_CLOSED)
    client_id = headers.get("x-request-id")
    if client_id and client_id == request_id_var.get():  # the client's, and valid (else IIR made one)
        answer = with_id(answer, client_id)
    return to_response(answer)


async def run_inference(
    pipeline: Pipeline,
    headers: Mapping[str, str],
    client_ip: str,
    read_body: BodyReader,
    schema: type[InferenceRequest],
    endpoint: str,
    receive: Receive | None = None,
    principal: Principal | None = None,
    native: NativeBody | None = None,
) -> Answer | None:
    """One request through the pipeline. With `receive`, a client that goes away while its answer is
    made cancels the request, and with it the upstream call (vLLM stops generating): None then. A
    stream watches for that itself once it is sent. `principal`: the caller, when the edge had to know
    it before the body (else the pipeline authenticates)."""
    body_read = asyncio.Event()

    async def reader() -> dict[str, Any]:
        body = await read_body()
        body_read.set()
        return body

    ctx = RequestContext(
        endpoint, schema, headers=headers, client_ip=client_ip, read_body=reader, principal=principal, native=native
    )
    if receive is None:
        return await pipeline.run(ctx)
    return await _unless_client_leaves(pipeline.run(ctx), receive, body_read)


async def run_chat(
    request: Request, read_body: BodyReader, principal: Principal | None = None, native: NativeBody | None = None
) -> Answer | None:
    """A chat request that another API was translated into (Messages, Responses), through the pipeline;
    `native`: the request as the client wrote it, for an upstream of that API."""
    pipeline: Pipeline = request.app.state.pipeline
    return await run_inference(
        pipeline,
        request.headers,
        client_ip(request),
        read_body,
        ChatCompletionRequest,
        "chat/completions",
        request.receive,
        principal,
        native,
    )


async def _client_left(receive: Receive, body_read: asyncio.Event) -> None:
    await body_read.wait()  # before, `receive` brings the body
    while (await receive())["type"] != "http.disconnect":
        pass


# Answers made faster than this need no watcher: a timer costs far less than a task per request.
WATCH_AFTER_S = 0.05


async def _unless_client_leaves(run: Any, receive: Receive, body_read: asyncio.Event) -> Answer | None:
    """The pipeline's answer, or None when the client disconnected first: once the answer takes longer
    than WATCH_AFTER_S, a watcher waits for the disconnect and then cancels this task, and the run."""
    current = asyncio.current_task()
    assert current is not None
    loop = asyncio.get_running_loop()
    left = False
    watcher: asyncio.Task[None] | None = None

    async def watch() -> None:
        nonlocal left
        await _client_left(receive, body_read)
        left = True
        current.cancel()

    def start_watching() -> None:
        nonlocal watcher
        watcher = loop.create_task(watch())

    timer = loop.call_later(WATCH_AFTER_S, start_watching)
    try:
        answer: Answer = await run
        return answer
    except asyncio.CancelledError:
        if not left:
            raise
        current.uncancel()  # the cancellation was ours, not the server's
        return None
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()
