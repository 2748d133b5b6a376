"""Reading request bodies: size limit, JSON parsing, OpenAI-style errors."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request

from iir_gateway.errors import APIError


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object; 413 past `limit` bytes (chunked bodies included), 400 if not JSON."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"Request body too large: the limit is {limit} bytes.", code="request_too_large")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise APIError(400, "The request body is empty; send a JSON object.", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise APIError(400, "We could not parse the JSON body of your request. The body must be valid JSON.",
                       code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, "The request body must be a JSON object.", code="invalid_json")
    return body


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""
