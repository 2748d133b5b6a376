"""Bedrock Converse response → OpenAI chat completion, and the mappings the stream shares: `stopReason` →
`finish_reason`, `usage` (cache reads and writes counted as prompt tokens) → `usage`."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}


def finish_reason(stop_reason: str | None) -> str | None:
    return FINISH_REASONS.get(stop_reason or "", "stop") if stop_reason else None


def usage(raw: dict[str, Any] | None) -> dict[str, Any]:
    raw = raw or {}
    cached = int(raw.get("cacheReadInputTokens") or 0)
    prompt = int(raw.get("inputTokens") or 0) + cached + int(raw.get("cacheWriteInputTokens") or 0)
    completion = int(raw.get("outputTokens") or 0)
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    return out


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"  # Converse answers carry no id of their own


def from_converse(data: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI chat completion for a Converse answer."""
    message = (data.get("output") or {}).get("message") or {}
    text, reasoning, tool_calls = [], [], []
    for block in message.get("content") or []:
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            text.append(block["text"])
        elif isinstance(block.get("toolUse"), dict):
            use = block["toolUse"]
            arguments = orjson.dumps(use.get("input") or {}).decode()
            tool_calls.append(
                {
                    "id": use.get("toolUseId", ""),
                    "type": "function",
                    "function": {"name": use.get("name", ""), "arguments": arguments},
                }
            )
        elif isinstance(block.get("reasoningContent"), dict):
            reasoning.append(str((block["reasoningContent"].get("reasoningText") or {}).get("text", "")))
    reply: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(text) if text or not tool_calls else None,
        "refusal": None,
    }
    if tool_calls:
        reply["tool_calls"] = tool_calls
    if reasoning:
        reply["reasoning_content"] = "".join(reasoning)
    return {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "",
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": finish_reason(data.get("stopReason")) or "stop",
            }
        ],
        "usage": usage(data.get("usage")),
    }
