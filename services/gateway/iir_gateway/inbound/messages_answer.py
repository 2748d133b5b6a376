"""Anthropic Messages answers: an OpenAI chat completion as a Messages answer
(https://docs.anthropic.com/en/api/messages). The other direction is `wire.anthropic_response`."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from iir_gateway.inbound.chat_reading import reasoning

# OpenAI finish reason → Anthropic stop reason (the inverse of anthropic_response.FINISH_REASONS).
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}


def usage(chat_usage: dict[str, Any] | None) -> dict[str, int]:
    """The Messages usage for an OpenAI usage: cached prompt tokens are not counted as input."""
    usage = chat_usage or {}
    cached = int(((usage.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0)
    return {
        "input_tokens": int(usage.get("prompt_tokens") or 0) - cached,
        "output_tokens": int(usage.get("completion_tokens") or 0),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def stop(choice: dict[str, Any], stops: list[str], called: bool = False) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) for an OpenAI choice: vLLM names the stop string that ended it. An
    answer that `called` a tool stopped for it (`tool_use`, which agent loops branch on), even where vLLM
    says `stop`, as it does for a call the request forced with a named `tool_choice`."""
    finish = choice.get("finish_reason") or "stop"
    matched = choice.get("stop_reason")
    if finish == "stop" and isinstance(matched, str) and matched in stops:
        return "stop_sequence", matched
    if finish == "stop" and called:
        return "tool_use", None
    return STOP_REASONS.get(finish, "end_turn"), None


def tool_use_id(call_id: str) -> str:
    """A tool call's id as Anthropic writes them (`toolu_…`); the same id comes back in `tool_result`
    and in the replayed `tool_use`, so the upstream sees one id either way."""
    return call_id if call_id.startswith("toolu_") else f"toolu_{call_id or uuid.uuid4().hex}"


def tool_input(arguments: str) -> dict[str, Any]:
    """A tool call's input: Anthropic's is always an object, so arguments a model wrote as anything
    else (a bare string, broken JSON) come as `{"_raw": <the text>}`."""
    try:
        parsed = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"_raw": arguments}


def message_id(answer_id: str) -> str:
    return answer_id if answer_id.startswith("msg_") else f"msg_{answer_id or uuid.uuid4().hex}"


def message_response(completion: dict[str, Any], model: str, stops: list[str]) -> dict[str, Any]:
    """The Messages answer for an OpenAI chat completion (its first choice: Messages has one)."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if thought := reasoning(message):
        content.append({"type": "thinking", "thinking": thought, "signature": ""})
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        arguments = tool_input(str(function.get("arguments") or ""))
        content.append(
            {
                "type": "tool_use",
                "id": tool_use_id(str(call.get("id") or "")),
                "name": function.get("name", ""),
                "input": arguments,
            }
        )
    stop_reason, stop_sequence = stop(choice, stops, bool(message.get("tool_calls")))
    return {
        "id": message_id(str(completion.get("id", ""))),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage(completion.get("usage")),
    }
