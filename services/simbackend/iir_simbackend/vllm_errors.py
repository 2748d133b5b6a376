"""vLLM's error bodies and the request checks it makes before generating (recorded from vLLM 0.32,
`tests/data/vllm/error_*.json`)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


def error(status: int, message: str, kind: str, param: str | None = None) -> web.Response:
    """vLLM's error shape: `code` is the HTTP status, `type` an exception name."""
    body = {"error": {"message": message, "type": kind, "param": param, "code": status}}
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


async def json_object(request: web.Request) -> dict[str, Any] | web.Response:
    """The request's JSON object, or vLLM's 400 for a body that is not JSON or not an object."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return error(400, "JSON decode error", "Bad Request", "body")
    if not isinstance(body, dict):
        return error(400, "Input should be a valid dictionary", "Bad Request", "body")
    return body


def not_found() -> web.Response:
    """What vLLM answers for a route its model does not serve (FastAPI's default 404)."""
    return web.Response(body=b'{"detail":"Not Found"}', status=404, content_type="application/json")


def _bad(message: str, param: str | None, value: Any = None) -> web.Response:
    suffix = f" (parameter={param}, value={value})" if param and value is not None else ""
    suffix = suffix or (f" (parameter={param})" if param else "")
    return error(400, message + suffix, "BadRequestError", param)


def missing(field: str, body: dict[str, Any]) -> web.Response:
    """A required field is absent (vLLM's pydantic message, as its FastAPI layer writes it)."""
    detail = {
        "type": "missing",
        "loc": f"body.{field}",
        "msg": "Field required",
        "input": f"<dict of {len(body)} items>",
    }
    return error(400, f"1 validation error:\n  {detail}", "Bad Request", f"body.{field}")


def check_sampling(body: dict[str, Any], max_model_len: int, prompt_tokens: int) -> web.Response | None:
    """vLLM's refusals of sampling parameters, first one wins; None when the request may run."""
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        if not isinstance(max_tokens, int) or max_tokens < 1:
            return _bad(f"max_tokens must be at least 1, got {max_tokens}.", "max_tokens", max_tokens)
        if max_tokens > max_model_len:
            return _bad(
                f"max_tokens={max_tokens} cannot be greater than max_model_len={max_model_len}. "
                "Please request fewer output tokens.",
                "max_tokens",
                max_tokens,
            )
        if prompt_tokens + max_tokens > max_model_len:
            return _bad(
                f"This model's maximum context length is {max_model_len} tokens. However, you requested "
                f"{max_tokens} output tokens and your prompt contains {prompt_tokens} input tokens, for a total "
                f"of {prompt_tokens + max_tokens} tokens.",
                "max_tokens",
                max_tokens,
            )
    temperature = body.get("temperature")
    if temperature is not None and temperature < 0:
        return _bad(f"temperature must be non-negative, got {float(temperature)}.", "temperature", float(temperature))
    top_p = body.get("top_p")
    if top_p is not None and not 0 < top_p <= 1:
        return _bad(f"top_p must be in (0, 1], got {float(top_p)}.", "top_p", float(top_p))
    n = body.get("n") or 1
    if n > 1 and temperature is not None and temperature < 1e-5:
        return _bad(f"n must be 1 when using greedy sampling, got {n}.", None)
    if body.get("stream_options") is not None and not body.get("stream"):
        return _bad("Stream options can only be defined when `stream=True`.", "stream_options")
    return None
