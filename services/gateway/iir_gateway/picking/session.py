"""The session a request belongs to, from what clients already send: agents resend a growing conversation,
so its requests are worth keeping on the replica that holds its KV cache."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# IIR's own header, Claude Code's, and Codex's (which sends its conversation id as `session_id`).
SESSION_HEADERS = ("x-session-id", "x-claude-code-session-id", "session_id", "session-id")
_MAX_LENGTH = 256


def session_of(headers: Mapping[str, str], body: Mapping[str, Any], key_id: str) -> str:
    """The request's session, scoped to the calling key (one tenant cannot steer another's), or ""."""
    value: Any = next((headers[h] for h in SESSION_HEADERS if headers.get(h)), None)
    if value is None:
        metadata = body.get("metadata")
        value = (
            body.get("prompt_cache_key")
            or (metadata.get("user_id") if isinstance(metadata, Mapping) else None)
            or body.get("user")
        )
    if not isinstance(value, str) or not value:
        return ""
    return f"{key_id}:{value[:_MAX_LENGTH]}"
