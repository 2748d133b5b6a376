"""Errors of an upstream call, and what an upstream's error body says."""

from __future__ import annotations

import contextlib
from typing import Any

import orjson

from iir_gateway.errors import APIError


class UpstreamError(APIError):
    """An upstream call that failed; `retryable` when trying again is safe (nothing was generated)."""

    def __init__(
        self, status: int, message: str, code: str, retryable: bool, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status, message, code=code, headers=headers)
        self.retryable = retryable


def upstream_message(raw: bytes) -> str:
    """The message of an upstream's error body, whatever its shape (OpenAI's, a plain string, text)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:500].decode(errors="replace").strip() or "no body"
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if data.get("message"):
            return str(data["message"])
    return raw[:500].decode(errors="replace")


def upstream_error(raw: bytes, status: int, public_model: str) -> dict[str, Any]:
    """The upstream's error object, for a 4xx passed to the client: its `message`, `type`, `param` and
    `code` as it sent them (a client branches on `context_length_exceeded`…), IIR's where it has none.
    A body that is not OpenAI's (`{"detail": "Not Found"}`, text) becomes a readable message."""
    data: Any = None
    with contextlib.suppress(orjson.JSONDecodeError):
        data = orjson.loads(raw)
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict) and err.get("message"):
        out = {k: err.get(k) for k in ("message", "type", "param", "code")}
        if not isinstance(out["code"], str):  # vLLM repeats the HTTP status there: no information
            out["code"] = "upstream_rejected"
        out["message"] = str(out["message"])
        return out
    detail = data.get("detail") if isinstance(data, dict) else None
    if isinstance(detail, list):  # FastAPI's validation errors
        detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    text = str(detail) if detail else upstream_message(raw)
    return {
        "message": f"The upstream for `{public_model}` answered {status}: {text}.",
        "type": None,
        "param": None,
        "code": "upstream_rejected",
    }
