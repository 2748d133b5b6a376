"""A cached completion as the stream of events an upstream would have sent."""

from __future__ import annotations

import time
from typing import Any

from iir_gateway.answer import Event


def replay(completion: dict[str, Any], include_usage: bool, chat: bool) -> list[Event]:
    base = {
        "id": completion.get("id", ""),
        "created": int(time.time()),
        "model": completion.get("model", ""),
        "object": "chat.completion.chunk" if chat else "text_completion",
    }
    choice = (completion.get("choices") or [{}])[0]
    text = (choice.get("message") or {}).get("content") or "" if chat else choice.get("text") or ""
    events: list[dict[str, Any]] = []
    if chat:
        first = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
        events.append({**base, "choices": [first]})
    for i, word in enumerate(text.split(" ")):
        piece = word if i == 0 else " " + word
        delta: dict[str, Any] = {"delta": {"content": piece}} if chat else {"text": piece}
        events.append({**base, "choices": [{"index": 0, **delta, "logprobs": None, "finish_reason": None}]})
    end: dict[str, Any] = {"delta": {}} if chat else {"text": ""}
    finish = choice.get("finish_reason") or "stop"
    events.append({**base, "choices": [{"index": 0, **end, "logprobs": None, "finish_reason": finish}]})
    if include_usage and completion.get("usage"):
        events.append({**base, "choices": [], "usage": completion["usage"]})
    return [Event.of(e) for e in events]
