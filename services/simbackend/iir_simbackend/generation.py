"""Deterministic fake generation: the same request always gives the same tokens, logprobs and calls."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from iir_simbackend.structured import schema_value

_VOCAB = (
    "the model answers every question with calm and measured words about tokens "
    "routing gateways clusters replicas latency throughput cache prefix decode batch "
    "scheduler kernel tensor memory stream chunk request response server client"
).split()


def count_tokens(text: str) -> int:
    """A rough token count (about 1.3 tokens per word), stable across calls."""
    return max(1, round(len(text.split()) * 1.3))


def _digest(text: str, size: int = 8) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=size).digest()


def completion_length(prompt: str, max_tokens: int) -> tuple[int, str]:
    """How many tokens to produce and the finish reason."""
    natural = 8 + _digest(prompt, 2)[0] % 24
    return (max_tokens, "length") if natural >= max_tokens else (natural, "stop")


def tokens(prompt: str, n: int) -> Iterator[str]:
    """`n` token strings; the first has no leading space, and a sentence ends every seventh word (so
    `stop: ["."]` can stop it)."""
    seed = _digest(prompt)
    for i in range(n):
        word = _VOCAB[(seed[i % 8] + i * 7) % len(_VOCAB)]
        if i % 7 == 6:
            word += "."
        yield word if i == 0 else " " + word


@dataclass(frozen=True)
class Generated:
    """One choice's output: its tokens, why it ended, and the stop string that ended it."""

    tokens: list[str]
    finish: str
    stop_reason: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.tokens)


def generate(
    seed: str, max_tokens: int, stop: Sequence[str] = (), json_object: bool = False, ignore_eos: bool = False
) -> Generated:
    """The tokens for `seed` (the prompt, and which choice), cut by `max_tokens` and the stop strings; with
    vLLM's `ignore_eos`, exactly `max_tokens` of them."""
    count, finish = (max_tokens, "length") if ignore_eos else completion_length(seed, max_tokens)
    words = list(tokens(seed, count))
    if json_object:  # a JSON object, cut like any text when max_tokens runs out
        words = ['{"', "answer", '": "', *(w.strip() for w in words[: max(count - 4, 1)]), '"}']
        if len(words) > max_tokens:
            words, finish = words[:max_tokens], "length"
    if stop:
        text = ""
        for i, word in enumerate(words):
            text += word
            hit = next((s for s in stop if s and s in text), None)
            if hit is not None:
                return Generated(_prefix(words[: i + 1], len(text[: text.index(hit)])), "stop", hit)
    return Generated(words, finish)


def _prefix(words: list[str], length: int) -> list[str]:
    """The tokens that spell the first `length` characters (the last one cut short)."""
    out, used = [], 0
    for word in words:
        if used + len(word) > length:
            if length > used:
                out.append(word[: length - used])
            break
        out.append(word)
        used += len(word)
    return out


def _logprob(token: str, rank: int) -> float:
    return -round(0.05 + rank * 0.9 + _digest(token, 1)[0] / 255, 6)


def logprob_entry(token: str, top: int) -> dict[str, Any]:
    """A chat logprobs `content` entry: the token first among its `top` alternatives."""
    alternatives = [token, *(w for w in _VOCAB[_digest(token, 1)[0] % 7 :: 7] if w != token)][: max(top, 0)]
    return {
        "token": token,
        "logprob": _logprob(token, 0),
        "bytes": list(token.encode()),
        "top_logprobs": [
            {"token": t, "logprob": _logprob(t, r), "bytes": list(t.encode())} for r, t in enumerate(alternatives)
        ],
    }


def text_logprobs(words: list[str], top: int) -> dict[str, Any]:
    """A completion's `logprobs` object (the legacy format: parallel lists and token → logprob maps)."""
    offsets, at = [], 0
    for word in words:
        offsets.append(at)
        at += len(word)
    entries = [logprob_entry(w, top) for w in words]
    return {
        "text_offset": offsets,
        "token_logprobs": [e["logprob"] for e in entries],
        "tokens": words,
        "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
    }


def tool_arguments(tool: dict[str, Any], prompt: str) -> str:
    """The call's arguments as JSON, a value of the tool's parameters schema (every required parameter;
    every one when none is named required); strings are a name from the prompt where it has one."""
    params = dict(tool.get("function", {}).get("parameters") or {})
    props = params.get("properties") or {}
    params["required"] = params.get("required") or list(props)
    params["properties"] = {name: props[name] for name in params["required"] if name in props}
    names = re.findall(r"\b[A-Z][a-z]+\b", prompt)
    return orjson.dumps(
        schema_value(params | {"type": "object"}, names[-1] if names else next(tokens(prompt, 1)))
    ).decode()


def call_id(seed: str) -> str:
    return "chatcmpl-tool-" + _digest(seed).hex()
