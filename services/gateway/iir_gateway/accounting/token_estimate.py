"""Token counts of a request before the real count is known: a cheap estimate (about 4 characters a
token), reserved against TPM limits and billed for an answer that brought no usage, and a worst case of
the prompt for text, reserved against budgets."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson

CHARS_PER_TOKEN = 4
# Tokens a chat template adds around each message (role markers: Llama 3 and ChatML add 5), and around
# the whole conversation (BOS, the assistant's header that prompts the answer), at most.
MESSAGE_OVERHEAD = 8
PROMPT_OVERHEAD = 2  # a completions prompt: BOS and the like
# Top-level fields of a chat request that chat templates write into the prompt.
_PROMPT_FIELDS = ("tools", "functions", "tool_choice", "documents", "chat_template_kwargs", "system", "instructions")
# Content parts whose tokens the request does not bound (an image is tokens per tile, not per byte).
_MEDIA = ("image", "audio", "video", "file")


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


def count(value: Any) -> int | None:
    """A count the client sent: an int, or a float or a string with an integer value (`8.0`, `"8"`);
    never a bool."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):  # "8": an upstream's lax validation may read it as 8
        try:
            number = float(value.strip().replace("_", ""))
        except ValueError:
            return None
        return int(number) if number.is_integer() else None
    return None


def generates(body: dict[str, Any]) -> bool:
    """The request generates text (chat or completions), unlike an embedding."""
    return "messages" in body or "prompt" in body or "input" not in body


def asked_max_tokens(body: dict[str, Any]) -> int | None:
    """The completion tokens per choice the client allowed: the larger of `max_completion_tokens` and
    `max_tokens` (upstreams differ in which one they read)."""
    given = [c for c in (count(body.get("max_completion_tokens")), count(body.get("max_tokens"))) if c and c > 0]
    return max(given) if given else None


def prompts(body: dict[str, Any]) -> int:
    """How many prompts a completions request has: one per string or token-id list in a list `prompt`
    (a list of token ids is one prompt)."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and any(isinstance(p, (str, list)) for p in prompt):
        return len(prompt)
    return 1


def choices(body: dict[str, Any]) -> int:
    """How many answers the request generates: `n` (or `best_of`, the candidates generated to return
    `n`, when more) for each prompt."""
    n = max((c for c in (count(body.get("n")), count(body.get("best_of"))) if c is not None and c > 0), default=1)
    return n * prompts(body)


def _prompt_size(prompt: Any) -> tuple[int, int]:
    """(characters, token ids) of a completions prompt or embeddings input."""
    if isinstance(prompt, str):
        return len(prompt), 0
    chars = ids = 0
    for p in prompt if isinstance(prompt, list) else ():
        if isinstance(p, str):
            chars += len(p)
        elif isinstance(p, list):
            ids += len(p)
        else:
            ids += 1
    return chars, ids


def estimate_tokens(body: dict[str, Any], default_completion: int) -> TokenEstimate:
    """Prompt: about one token per 4 characters (+4 per message), one per token id; completion:
    max_tokens, or the default, for each answer."""
    # Every prompt field the body has counts (a decoy `messages: []` must not hide a `prompt`).
    chars = ids = 0
    messages = body.get("messages")
    if isinstance(messages, list):
        chars = sum(_text_length(m.get("content")) + 16 for m in messages if isinstance(m, dict))
    for name in ("prompt", "input"):
        if name in body:
            more_chars, more_ids = _prompt_size(body[name])
            chars, ids = chars + more_chars, ids + more_ids
    prompt = math.ceil(chars / CHARS_PER_TOKEN) + ids
    if not generates(body):
        return TokenEstimate(prompt, 0)  # embeddings generate nothing
    completion = asked_max_tokens(body) or default_completion
    return TokenEstimate(prompt, completion * choices(body))


def _utf8(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _json(value: Any) -> int:
    """UTF-8 bytes of `value` as JSON: at least those of every string in it."""
    if isinstance(value, str):
        return _utf8(value)
    try:
        return len(orjson.dumps(value))
    except TypeError:  # an integer past 64 bits, say: the text of it is no shorter
        return _utf8(repr(value))


def _content_bound(content: Any) -> int:
    if isinstance(content, str):
        return _utf8(content)
    if not isinstance(content, list):
        return _json(content) if content is not None else 0
    total = 0
    for part in content:
        kind = str(part.get("type", "")) if isinstance(part, dict) else ""
        if not any(media in kind for media in _MEDIA):
            total += _json(part)
    return total


def _prompt_bound(prompt: Any) -> int:
    if isinstance(prompt, str):
        return _utf8(prompt) + PROMPT_OVERHEAD
    if not isinstance(prompt, list):
        return _json(prompt)
    total = 0
    for p in prompt:
        if isinstance(p, str):
            total += _utf8(p) + PROMPT_OVERHEAD
        elif isinstance(p, list):
            total += len(p) + PROMPT_OVERHEAD  # one token per id
        else:
            total += 1
    return total + PROMPT_OVERHEAD


def prompt_bound(body: dict[str, Any]) -> int:
    """At most how many tokens the prompt is, for text: its UTF-8 bytes (a byte-level tokenizer makes at
    most one token of a byte) in every field that becomes prompt tokens, one per token id, and
    `MESSAGE_OVERHEAD` per message. Images, audio, video and files count nothing (not bounded here)."""
    # Every prompt field the body has counts: upstreams read the one their endpoint takes, and a decoy
    # (`messages: []` beside a `prompt`, `prompt: ""` beside an `input`) must not hide it.
    total = sum(_prompt_bound(body[name]) for name in ("prompt", "input") if name in body)
    total += _json(body.get("suffix") or "")
    for name in _PROMPT_FIELDS:
        value = body.get(name)
        if value is not None:
            total += _json(value)
    messages = body.get("messages")
    if not isinstance(messages, list):
        return total
    total += MESSAGE_OVERHEAD * (len(messages) + 1)
    for m in messages:
        if not isinstance(m, dict):
            total += _json(m)
            continue
        for name, value in m.items():
            if name == "content":
                total += _content_bound(value)
            elif name != "role" and value is not None:
                total += _json(value)  # name, tool_calls (their arguments), tool_call_id, ...
    return total
