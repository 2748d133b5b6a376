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
    if "input" in body and "prompt" not in body and "messages" not in body:
        return TokenEstimate(math.ceil(chars / CHARS_PER_TOKEN), 0)  # embeddings generate nothing
    completion = body.get("max_completion_tokens") or body.get("max_tokens") or default_completion
    n = body.get("n")
    choices = n if isinstance(n, int) and n > 0 else 1  # n answers, n times the tokens
    return TokenEstimate(math.ceil(chars / CHARS_PER_TOKEN), int(completion) * choices)
