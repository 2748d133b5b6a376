"""Errors of an upstream call, and what an upstream's error body says."""

from __future__ import annotations

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
