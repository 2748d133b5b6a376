"""Gemini `generateContent` response → OpenAI chat completion, and the mappings the stream shares:
`finishReason` → `finish_reason`, `usageMetadata` → `usage`, `functionCall` parts → `tool_calls`."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

# What stopped the candidate; a blocked or filtered answer is `content_filter`.
FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}


def finish_reason(reason: str | None, called: bool) -> str | None:
    """OpenAI's finish reason for Gemini's (None while it has none); a stop with function calls is `tool_calls`."""
    if not reason:
        return None
    mapped = FINISH_REASONS.get(reason, "stop")
    return "tool_calls" if called and mapped == "stop" else mapped


def usage(meta: dict[str, Any] | None) -> dict[str, Any]:
    """OpenAI usage from `usageMetadata`: thinking tokens count as completion (reasoning) tokens."""
    meta = meta or {}
    prompt = int(meta.get("promptTokenCount") or 0)
    thoughts = int(meta.get("thoughtsTokenCount") or 0)
    completion = int(meta.get("candidatesTokenCount") or 0) + thoughts
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if meta.get("cachedContentTokenCount"):
        out["prompt_tokens_details"] = {"cached_tokens": int(meta["cachedContentTokenCount"])}
    if thoughts:
        out["completion_tokens_details"] = {"reasoning_tokens": thoughts}
    return out


def tool_call(call: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI tool call for a `functionCall` part (Gemini's own id when it sends one)."""
    return {
        "id": str(call.get("id") or f"call_{uuid.uuid4().hex[:24]}"),
        "type": "function",
        "function": {"name": call.get("name", ""), "arguments": orjson.dumps(call.get("args") or {}).decode()},
    }


def split_parts(parts: list[Any]) -> tuple[str, str, list[dict[str, Any]]]:
    """(text, thinking, tool calls) of a candidate's parts."""
    text: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in parts:
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("functionCall"), dict):
            calls.append(tool_call(part["functionCall"]))
        elif isinstance(part.get("text"), str):
            (thinking if part.get("thought") else text).append(part["text"])
    return "".join(text), "".join(thinking), calls


def response_id(data: dict[str, Any]) -> str:
    return f"chatcmpl-{data['responseId']}" if data.get("responseId") else f"chatcmpl-{uuid.uuid4().hex[:24]}"


def from_gemini(data: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI chat completion for a generateContent answer."""
    candidates = data.get("candidates") or []
    candidate = candidates[0] if candidates and isinstance(candidates[0], dict) else {}
    text, thinking, calls = split_parts((candidate.get("content") or {}).get("parts") or [])
    reply: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None, "refusal": None}
    if calls:
        reply["tool_calls"] = calls
    if thinking:
        reply["reasoning_content"] = thinking
    blocked = not candidates and (data.get("promptFeedback") or {}).get("blockReason")
    finish = "content_filter" if blocked else finish_reason(candidate.get("finishReason"), bool(calls)) or "stop"
    return {
        "id": response_id(data),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": data.get("modelVersion", ""),
        "choices": [{"index": 0, "message": reply, "logprobs": None, "finish_reason": finish}],
        "usage": usage(data.get("usageMetadata")),
    }
