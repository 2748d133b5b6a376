"""JSON bodies over HTTP: reading requests' (size limit, parsing, OpenAI-style errors) and writing responses."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Receive

from iir_gateway.errors import APIError


def _too_large(limit: int) -> APIError:
    return APIError(413, f"Request body too large: the limit is {limit} bytes.", code="request_too_large")


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """`raw` as a JSON object; 400 when empty, not JSON, or not an object."""
    if not raw.strip():
        raise APIError(400, "The request body is empty; send a JSON object.", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise APIError(
            400, "We could not parse the JSON body of your request. The body must be valid JSON.", code="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise APIError(400, "The request body must be a JSON object.", code="invalid_json")
    return body


async def read_json_object(request: Request, limit: int, optional: bool = False) -> dict[str, Any]:
    """The body of a Starlette request as a JSON object; 413 past `limit` bytes (chunked bodies included).
    With `optional`, an empty body is an empty object."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    return {} if optional and not body.strip() else parse_json_object(body)


async def read_asgi_json(receive: Receive, limit: int) -> dict[str, Any]:
    """The same, straight from ASGI `receive` messages."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return parse_json_object(chunks[0] if len(chunks) == 1 else b"".join(chunks))


def json_response(data: Any, status: int = 200) -> Response:
    """`data` as a JSON response."""
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def page_response(items: list[dict[str, Any]], has_more: bool) -> Response:
    """A page of a list (items with ids) as OpenAI writes it."""
    return json_response(
        {
            "object": "list",
            "data": items,
            "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None,
            "has_more": has_more,
        }
    )


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""
