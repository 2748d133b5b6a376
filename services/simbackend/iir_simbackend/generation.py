"""Deterministic fake generation: the same prompt always gives the same words."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

_VOCAB = (
    "the model answers every question with calm and measured words about tokens "
    "routing gateways clusters replicas latency throughput cache prefix decode batch "
    "scheduler kernel tensor memory stream chunk request response server client"
).split()


def count_tokens(text: str) -> int:
    """A rough token count (about 1.3 tokens per word), stable across calls."""
    return max(1, round(len(text.split()) * 1.3))


def completion_length(prompt: str, max_tokens: int) -> tuple[int, str]:
    """How many tokens to produce and the finish reason."""
    natural = 8 + hashlib.blake2b(prompt.encode(), digest_size=2).digest()[0] % 24
    return (max_tokens, "length") if natural >= max_tokens else (natural, "stop")


def tokens(prompt: str, n: int) -> Iterator[str]:
    """`n` token strings; the first has no leading space."""
    seed = hashlib.blake2b(prompt.encode(), digest_size=8).digest()
    for i in range(n):
        word = _VOCAB[(seed[i % 8] + i * 7) % len(_VOCAB)]
        yield word if i == 0 else " " + word
