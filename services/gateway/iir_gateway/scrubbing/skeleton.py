"""The bytes around the text of a stream's plain text events, so the scrubber can read their text without
parsing them.

Past its first events, an OpenAI stream is events that differ only in their text:
`{"id":"chatcmpl-1",…,"choices":[{"index":0,"delta":{"content":"` + the text, JSON-escaped +
`"},"logprobs":null,"finish_reason":null}]}`. The skeleton (the bytes before and after the text) is
learnt from one such event whose bytes hold no needle at all; an event that starts and ends with the
same bytes and has no quote between them is the same event with another text, so only its text needs
looking at. Anything else (a role, a tool call, logprobs, the finish, the usage) does not fit and is
parsed as before.
"""

from __future__ import annotations

from typing import Any

import orjson

# The fields of a choice (or its delta) that carry generated text, as the stream scrubber reads them.
TEXT_FIELDS = ("content", "reasoning_content", "reasoning", "text", "refusal")
# Events tried before giving up (a stream with logprobs has no two events alike).
_TRIES = 8


class TextSkeleton:
    """The skeleton of one stream's plain text events, once learnt (`field`: their choice and text field)."""

    __slots__ = ("field", "prefix", "suffix", "tries")

    def __init__(self) -> None:
        self.field: tuple[int, str] | None = None
        self.prefix = b""
        self.suffix = b""
        self.tries = _TRIES

    def unlearnt(self) -> bool:
        """Not learnt yet, and still worth trying."""
        return self.field is None and self.tries > 0

    def learn(self, raw: bytes, obj: Any) -> None:
        """Learns the skeleton from `raw` (parsed: `obj`) when it is a plain text event; the caller has
        checked that `raw` holds no needle."""
        self.tries -= 1
        choices = obj.get("choices") if isinstance(obj, dict) else None
        if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
            return
        choice = choices[0]
        index = choice.get("index", 0)
        if choice.get("finish_reason") is not None or not isinstance(index, int):
            return
        delta = choice.get("delta")
        holder = delta if isinstance(delta, dict) else choice
        names = [n for n in TEXT_FIELDS if n in holder]
        if len(names) != 1 or (holder is delta and len(delta) != 1):
            return
        name = names[0]
        text = holder[name]
        marker = b'"' + name.encode() + b'":"'
        if not isinstance(text, str) or not text or raw.count(marker) != 1:
            return
        start = raw.index(marker) + len(marker)
        end = _closing_quote(raw, start)
        if end < 0 or decode([raw[start:end]]) != text:
            return
        self.prefix, self.suffix, self.field = raw[:start], raw[end:], (index, name)


def decode(pieces: list[bytes]) -> str | None:
    """The text of JSON-escaped string contents, joined; None when one is not valid."""
    joined = b"".join(pieces)
    if b"\\" not in joined:
        try:
            return joined.decode()
        except UnicodeDecodeError:
            return None
    try:  # each piece alone, so an escape cannot be completed by the next piece
        return "".join(orjson.loads(b'"' + piece + b'"') for piece in pieces)
    except orjson.JSONDecodeError:
        return None


def _closing_quote(raw: bytes, start: int) -> int:
    """The index of the quote that ends the JSON string whose content starts at `start` (-1 if none)."""
    i = raw.find(b'"', start)
    while i >= 0:
        backslashes = 0
        while raw[i - 1 - backslashes] == 0x5C:  # `\`
            backslashes += 1
        if backslashes % 2 == 0:
            return i
        i = raw.find(b'"', i + 1)
    return -1
