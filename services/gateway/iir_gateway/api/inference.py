"""The inference endpoints' edge: one request in, through the pipeline, its answer out as ASGI."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import Response

from iir_common.logging import request_id_var
from iir_gateway.api.answers import to_response, with_id
from iir_gateway.pipeline.context import BodyReader, RequestContext
from iir_gateway.pipeline.pipeline import Pipeline
from iir_gateway.schemas import InferenceRequest


async def serve_inference(
    pipeline: Pipeline,
    headers: Mapping[str, str],
    client_ip: str,
    read_body: BodyReader,
    schema: type[InferenceRequest],
    endpoint: str,
) -> Response:
    """Serves one request to `endpoint` (`chat/completions`, `completions`, `embeddings`)."""
    ctx = RequestContext(
        endpoint,
        schema,
        headers=headers,
        client_ip=client_ip,
        read_body=read_body,
    )
    answer = await pipeline.run(ctx)
    client_id = headers.get("x-request-id")
    if client_id and client_id == request_id_var.get():  # the client's, and valid (else IIR made one)
        answer = with_id(answer, client_id)
    return to_response(answer)
