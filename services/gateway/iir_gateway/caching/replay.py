"""A cached answer as the stream of events an upstream would have sent: every choice, with its text in
word pieces, its reasoning, refusal, tool calls and logprobs, then its finish reason, then the usage
when it was asked for. Assembling the replay gives the answer back."""

from __future__ import annotations

import time
from typing import Any

from iir_gateway.answer import Event


def _pieces(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def _chat_events(index: int, choice: dict[str, Any]) -> list[dict[str, Any]]:
    message = choice.get("message") or {}
    out: list[dict[str, Any]] = [{"delta": {"role": message.get("role") or "assistant", "content": ""}}]
    content = message.get("content")
    if content:
        out += [{"delta": {"content": piece}} for piece in _pieces(content)]
    for name in ("reasoning_content", "reasoning", "refusal"):
        if message.get(name):
            out.append({"delta": {name: message[name]}})
    for i, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") or {}
        head = {"index": i, "id": call.get("id", ""), "type": call.get("type", "function")}
        out.append(
            {"delta": {"tool_calls": [{**head, "function": {"name": function.get("name", ""), "arguments": ""}}]}}
        )
        if function.get("arguments"):
            out.append({"delta": {"tool_calls": [{"index": i, "function": {"arguments": function["arguments"]}}]}})
    logprobs = choice.get("logprobs")
    if isinstance(logprobs, dict) and logprobs.get("content") is not None:
        out.append({"delta": {}, "logprobs": {"content": logprobs["content"], "refusal": None}})
    out.append({"delta": {}, "finish_reason": choice.get("finish_reason") or "stop"})
    return [{"index": index, "logprobs": None, "finish_reason": None, **e} for e in out]


def _text_events(index: int, choice: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"text": piece} for piece in _pieces(choice.get("text") or "")]
    if choice.get("logprobs"):
        out.append({"text": "", "logprobs": choice["logprobs"]})
    out.append({"text": "", "finish_reason": choice.get("finish_reason") or "stop"})
    return [{"index": index, "logprobs": None, "finish_reason": None, **e} for e in out]


def replay(completion: dict[str, Any], include_usage: bool, chat: bool) -> list[Event]:
    base = {
        "id": completion.get("id", ""),
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(time.time()),
        "model": completion.get("model", ""),
    }
    if completion.get("system_fingerprint"):
        base["system_fingerprint"] = completion["system_fingerprint"]
    events = []
    for position, choice in enumerate(completion.get("choices") or [{}]):
        index = choice.get("index", position)
        for event in (_chat_events if chat else _text_events)(index, choice):
            events.append({**base, "choices": [event]})
    if include_usage and completion.get("usage"):
        events.append({**base, "choices": [], "usage": completion["usage"]})
    return [Event.of(e) for e in events]
