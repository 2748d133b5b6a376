"""What the translated formats share of an OpenAI assistant message's tool calls."""

from __future__ import annotations

from typing import Any

import orjson

from iir_gateway.errors import invalid_value


def call_arguments(call: dict[str, Any], param: str) -> dict[str, Any]:
    """A tool call's arguments as the object every other format wants; 400 naming the field otherwise."""
    text = (call.get("function") or {}).get("arguments") or "{}"
    try:
        arguments = orjson.loads(text)
    except orjson.JSONDecodeError:
        arguments = None
    if not isinstance(arguments, dict):
        raise invalid_value("Tool call arguments must be a JSON object.", f"{param}.function.arguments")
    return arguments
