"""A cheap estimate of a request's tokens, reserved against TPM limits before the real count is known."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

CHARS_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class TokenEstimate:
    prompt: int
    completion: int

    @property
    def total(self) -> int:
        return self.prompt + self.completion


def _text_length(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(len(p["text"]) for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return 0


def generates(body: dict[str, Any]) -> bool:
    """The request generates text (chat or completions), unlike an embedding."""
    return "messages" in body or "prompt" in body or "input" not in body


def asked_max_tokens(body: dict[str, Any]) -> int | None:
    """The completion tokens per choice the client allowed (`max_completion_tokens` or `max_tokens`)."""
    value = body.get("max_completion_tokens") or body.get("max_tokens")
    return int(value) if isinstance(value, int) and value > 0 else None


def choices(body: dict[str, Any]) -> int:
    n = body.get("n")
    return n if isinstance(n, int) and n > 0 else 1


def estimate_tokens(body: dict[str, Any], default_completion: int) -> TokenEstimate:
    """Prompt: about one token per 4 characters (+4 per message); completion: max_tokens, or the default."""
    if "messages" in body:
        chars = sum(_text_length(m.get("content")) + 16 for m in body["messages"])
    else:
        prompt = body.get("prompt", body.get("input"))
        chars = (
            len(prompt)
            if isinstance(prompt, str)
            else _text_length([{"text": p} for p in prompt or [] if isinstance(p, str)])
        )
    if not generates(body):
        return TokenEstimate(math.ceil(chars / CHARS_PER_TOKEN), 0)  # embeddings generate nothing
    completion = asked_max_tokens(body) or default_completion
    return TokenEstimate(math.ceil(chars / CHARS_PER_TOKEN), completion * choices(body))  # n answers, n times
