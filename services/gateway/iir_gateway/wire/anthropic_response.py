"""Anthropic Messages response → OpenAI chat completion, and the shared field mappings."""

from __future__ import annotations

import time
from typing import Any

import orjson

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
    "model_context_window_exceeded": "length",
}


def finish_reason(stop_reason: str | None) -> str | None:
    return FINISH_REASONS.get(stop_reason or "", "stop") if stop_reason else None


def usage(raw: dict[str, Any] | None, output_tokens: int | None = None) -> dict[str, int]:
    """OpenAI usage from Anthropic's: cached and cache-creating input tokens count as prompt tokens."""
    raw = raw or {}
    prompt = sum(
        int(raw.get(k) or 0) for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    completion = int(output_tokens if output_tokens is not None else raw.get("output_tokens") or 0)
    out = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if raw.get("cache_read_input_tokens"):
        out["prompt_tokens_details"] = {"cached_tokens": int(raw["cache_read_input_tokens"])}  # type: ignore[assignment]
    return out


def from_anthropic(message: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI chat completion for a Messages API answer."""
    text, reasoning, tool_calls = [], [], []
    for block in message.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            text.append(block.get("text", ""))
        elif kind == "thinking":
            reasoning.append(block.get("thinking", ""))
        elif kind == "tool_use":
            tool_calls.append(
                {
                    "id": block.get("id", ""),
                    "type": "function",
                    "function": {
                        "name": block.get("name", ""),
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
    reply: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(text) if text or not tool_calls else None,
        "refusal": None,  # OpenAI's schema requires it
    }
    if tool_calls:
        reply["tool_calls"] = tool_calls
    if reasoning:
        reply["reasoning_content"] = "".join(reasoning)
    return {
        "id": message.get("id", ""),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model", ""),
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": finish_reason(message.get("stop_reason")) or "stop",
                # The stop sequence that ended it, where vLLM puts it (read back by the Messages API).
                "stop_reason": message.get("stop_sequence"),
            }
        ],
        "usage": usage(message.get("usage")),
    }
