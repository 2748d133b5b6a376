"""The one way into the pipeline: every inbound API (HTTP routes, batch lines, jobs) calls `run_request`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from iir_gateway.answer import Answer
from iir_gateway.pipeline.context import BodyReader, RequestContext
from iir_gateway.pipeline.pipeline import Pipeline
from iir_gateway.principal import Principal
from iir_gateway.schemas import InferenceRequest
from iir_gateway.wire.base import NativeBody

# ASGI's `receive`, as far as the disconnect watch reads it.
Receive = Callable[[], Awaitable[Mapping[str, Any]]]

# Answers made faster than this need no watcher: a timer costs far less than a task per request.
WATCH_AFTER_S = 0.05


async def run_request(
    pipeline: Pipeline,
    operation: str,
    schema: type[InferenceRequest],
    *,
    body: dict[str, Any] | None = None,
    read_body: BodyReader | None = None,
    headers: Mapping[str, str] | None = None,
    client_ip: str = "",
    principal: Principal | None = None,
    native: NativeBody | None = None,
    request_id: str | None = None,
    count_request: bool = True,
    receive: Receive | None = None,
    state: Mapping[str, Any] | None = None,
) -> Answer | None:
    """One request to `operation` (`chat/completions`, `completions`, `embeddings`) through the pipeline.

    The body is given (`body`: a batch line, a job) or read once the key is known (`read_body`: HTTP).
    `principal`: the caller when already known (else the pipeline authenticates `headers`). With
    `receive` (an HTTP client), a client that goes away while its answer is made cancels the request,
    and with it the upstream call: None then. A stream watches for that itself once it is sent.
    `state`: steps' per-request state to start with, by step name (a job's kind, for Enqueue)."""
    body_read = asyncio.Event()
    reader: BodyReader | None = None
    if read_body is not None:
        read = read_body

        async def reader() -> dict[str, Any]:
            got = await read()
            body_read.set()
            return got
    else:
        body_read.set()
    ctx = RequestContext(
        operation,
        schema,
        headers=headers or {},
        client_ip=client_ip,
        read_body=reader,
        principal=principal,
        native=native,
        count_request=count_request,
        body=body if body is not None else {},
    )
    if request_id is not None:
        ctx.request_id = request_id
    if state:
        ctx.state.update(state)
    if receive is None:
        return await pipeline.run(ctx)
    return await _unless_client_leaves(pipeline.run(ctx), receive, body_read)


async def _client_left(receive: Receive, body_read: asyncio.Event) -> None:
    await body_read.wait()  # before, `receive` brings the body
    while (await receive())["type"] != "http.disconnect":
        pass


async def _unless_client_leaves(run: Awaitable[Answer], receive: Receive, body_read: asyncio.Event) -> Answer | None:
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
        return await run
    except asyncio.CancelledError:
        if not left:
            raise
        current.uncancel()  # the cancellation was ours, not the server's
        return None
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()
