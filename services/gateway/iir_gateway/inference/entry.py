"""The inference edge: one request of an inbound protocol in, through the pipeline, its answer (or error)
out as ASGI, written as that protocol's clients expect."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from starlette.responses import Response
from starlette.types import Receive

from iir_gateway.errors import APIError
from iir_gateway.inbound.base import Exchange, InboundProtocol
from iir_gateway.inference.asgi_answer import to_response
from iir_gateway.pipeline.context import BodyReader
from iir_gateway.pipeline.entry import run_request
from iir_gateway.pipeline.pipeline import Pipeline
from iir_gateway.principal import Principal


class BodyLimit(Protocol):
    """The setting the routes that read a request body read."""

    @property
    def max_body_bytes(self) -> int: ...


# What a client that went away gets (nobody reads it; the access log and metrics do).
CLIENT_CLOSED = 499


def translated(exchange: Exchange, read_json: Callable[[], Awaitable[dict[str, Any]]]) -> BodyReader:
    """The pipeline's body reader: the client's body (`read_json`), translated by `exchange`."""

    async def read_body() -> dict[str, Any]:
        return exchange.request(await read_json())

    return read_body


async def serve(
    pipeline: Pipeline,
    protocol: InboundProtocol,
    exchange: Exchange,
    read_body: BodyReader,
    headers: Mapping[str, str],
    client_ip: str,
    receive: Receive,
    principal: Principal | None = None,
) -> Response:
    """Serves one request of `protocol`: its body (the pipeline's form, from `read_body`, read once the key
    is known) runs through the pipeline, and a client that goes away meanwhile cancels it; the answer or
    error is written as `protocol` writes them. `principal`: the caller, when the route already knows it."""
    try:
        answer = await run_request(
            pipeline,
            protocol.operation,
            protocol.schema,
            read_body=read_body,
            headers=headers,
            client_ip=client_ip,
            principal=principal,
            native=exchange.native,
            receive=receive,
        )
    except APIError as exc:
        return protocol.error(exc)
    if answer is None:
        return Response(status_code=CLIENT_CLOSED)
    return await to_response(answer, exchange)
