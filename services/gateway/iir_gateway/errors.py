"""OpenAI-style errors: `{"error": {"message", "type", "param", "code"}, "detail": message}` with the right HTTP
status. `detail` is the first design's error field (FastAPI's too), beside the object the SDKs parse."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

log = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}


def error_body(
    status: int, message: str, *, type: str | None = None, code: str | None = None, param: str | None = None
) -> bytes:
    """An OpenAI error body, `{"error": ..., "detail": message}` with `APIError.error_object`."""
    error = APIError(status, message, type=type, code=code, param=param).error_object()
    return orjson.dumps({"error": error, "detail": message})


# Anthropic's error types by HTTP status (https://docs.anthropic.com/en/api/errors), for its routes.
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}
ANTHROPIC_ROUTES = "/v1/messages"


def anthropic_error_body(status: int, message: str) -> bytes:
    kind = _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}, "detail": message})


class APIError(Exception):
    """An error the client should see, with its HTTP status and OpenAI error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        type: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.type = type
        self.param = param
        self.headers = dict(headers or {})

    def error_object(self) -> dict[str, Any]:
        """OpenAI's error object, `{"message", "type", "param", "code"}`: what an HTTP error body, a failed
        job and a batch line's error all carry. Without an explicit type, the type of the HTTP status."""
        status = self.status
        kind = self.type or _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return {"message": self.message, "type": kind, "param": self.param, "code": self.code}

    def response(self, anthropic: bool = False) -> Response:
        """The error as OpenAI writes it, or as Anthropic does (on Anthropic's routes)."""
        if anthropic:
            body = anthropic_error_body(self.status, self.message)
        else:
            body = orjson.dumps({"error": self.error_object(), "detail": self.message})
        return Response(body, status_code=self.status, media_type="application/json", headers=self.headers)


def invalid_value(message: str, param: str | None = None, *, named: bool = False) -> APIError:
    """A 400 for a request field the gateway cannot take; `named` puts the field first in the message
    (`messages[0].role: …`, as Anthropic words it)."""
    return APIError(400, f"{param}: {message}" if named else message, code="invalid_value", param=param)


def _shaped(request: Request, exc: APIError) -> Response:
    return exc.response(anthropic=request.url.path.startswith(ANTHROPIC_ROUTES))


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return _shaped(request, exc)


# Paths an SDK asks for when its base URL lacks `/v1` (OpenAI(base_url="http://host:8080")).
_OPENAI_PATHS = ("/chat/completions", "/completions", "/embeddings", "/models", "/responses", "/messages")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    if exc.status_code == 404:
        path = request.url.path
        message = f"Unknown request URL: {request.method} {path}."
        if path.startswith(_OPENAI_PATHS):
            base = str(request.base_url).rstrip("/")
            message += f" The OpenAI API is under /v1: set the client's base URL to {base}/v1."
    code = {404: "unknown_url", 405: "method_not_allowed"}.get(exc.status_code)
    return _shaped(request, APIError(exc.status_code, message, code=code, headers=getattr(exc, "headers", None)))


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"msg": "invalid request", "loc": ()}
    param = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
    return _shaped(request, APIError(400, f"Invalid request: {first['msg']}", param=param or None))


async def _store_unavailable(request: Request, exc: Exception) -> Response:
    # Only routes that need Redis to answer get here (jobs); inference goes on without it.
    log.warning("Redis unavailable", extra={"path": request.url.path, "error": repr(exc)[:200]})
    return _shaped(
        request,
        APIError(
            503,
            "The job store (Redis) is unavailable; try again shortly.",
            code="store_unavailable",
            headers={"retry-after": "5"},
        ),
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Logged with its traceback by RequestContextMiddleware; the client gets no internals.
    return _shaped(
        request, APIError(500, "The server had an error while processing your request.", code="internal_error")
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Exception, _unexpected)
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(RedisError, _store_unavailable)
