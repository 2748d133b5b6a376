"""The inference endpoints' edge: one request in, through the pipeline, its answer out as ASGI."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import Response

from iir_gateway.api.answers import to_response
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
    return to_response(await pipeline.run(ctx))
