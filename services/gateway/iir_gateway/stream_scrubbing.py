"""Scrubbing a streamed answer whose secrets may be spelled over many chunks (real vLLM sends about one
token per chunk, and a model can be made to send one character per chunk).

Each choice's text is held back from the first place a secret could start (a needle such as `sk-` or
`password`, or the start of one at the very end) until that candidate is resolved: a token ended, a few
words followed an assignment, a private key block ended, or the stream ended. What is released is
scrubbed first. Clean text is not held, so a clean stream keeps its timing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from iir_common.secret_scrubber import NEEDLES, TOKEN_KINDS, SecretScrubber, normal_char

_TEXT_FIELDS = ("content", "reasoning_content", "reasoning", "text")
# After a prose needle (`password`, `bearer`, `aws`, `://`): how many words, and at most how many characters.
_PROSE_WORDS = 6
_PROSE_CHARS = 256
_TOKEN_CHARS = 512
_BLOCK_CHARS = 8192
_TOKEN_CHARSET = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-./+=")
_NEEDLE_KIND = {(n if isinstance(n, str) else n[0]): kind for kind, needles in NEEDLES.items() for n in needles}


class StreamScrubber:
    def __init__(self, scrubber: SecretScrubber, on_found: Callable[[set[str]], None]) -> None:
        self.scrubber = scrubber
        self.on_found = on_found
        self.held: dict[tuple[int, str], str] = {}
        self._template: dict[str, Any] | None = None

    def feed(self, chunk: bytes) -> bytes:
        """Complete SSE events in, the same events out with their text released or held."""
        out = []
        for event in chunk.split(b"\n\n"):
            if not event:
                continue
            if event.startswith(b"data: {"):
                out.append(self._event(event))
                continue
            if event.startswith(b"data: [DONE]"):
                out.append(self.flush())
            out.append(self._scrub_bytes(event) + b"\n\n")
        return b"".join(out)

    def flush(self) -> bytes:
        """Whatever is still held, scrubbed, as one last chunk (before `[DONE]` or when the stream ends)."""
        if not any(self.held.values()) or self._template is None:
            self.held.clear()
            return b""
        choices: dict[int, dict[str, Any]] = {}
        for (index, name), text in self.held.items():
            if text:
                choice = choices.setdefault(index, {"index": index, "finish_reason": None})
                target = choice if name == "text" else choice.setdefault("delta", {})
                target[name] = self._release(text)
        self.held.clear()
        return b"data: " + orjson.dumps({**self._template, "choices": list(choices.values())}) + b"\n\n"

    def _event(self, event: bytes) -> bytes:
        try:
            obj = orjson.loads(event[6:])
        except orjson.JSONDecodeError:
            return self._scrub_bytes(event) + b"\n\n"
        choices = obj.get("choices") if isinstance(obj, dict) else None
        if not isinstance(choices, list) or not choices:
            return self._scrub_bytes(event) + b"\n\n"
        self._template = {k: obj[k] for k in ("id", "object", "created", "model") if k in obj}
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            final = choice.get("finish_reason") is not None
            holder = choice.get("delta") if isinstance(choice.get("delta"), dict) else choice
            for name in _TEXT_FIELDS:
                text = holder.get(name)
                if isinstance(text, str) or (final and self.held.get((index, name))):
                    holder[name] = self._feed((index, name), text or "", final)
        return self._scrub_bytes(b"data: " + orjson.dumps(obj)) + b"\n\n"

    def _scrub_bytes(self, data: bytes) -> bytes:
        scrubbed, found = self.scrubber.scrub_bytes(data)
        if found:
            self.on_found(found)
        return scrubbed

    def _feed(self, key: tuple[int, str], text: str, final: bool) -> str:
        buffer = self.held.get(key, "") + text
        cut = len(buffer) if final else self._safe_length(buffer)
        self.held[key] = buffer[cut:]
        return self._release(buffer[:cut]) if cut else ""

    def _release(self, text: str) -> str:
        scrubbed, found = self.scrubber.scrub(text)
        if found:
            self.on_found(found)
        return scrubbed

    def _safe_length(self, buffer: str) -> int:
        """How much of `buffer` can be released: up to the first unresolved candidate."""
        if buffer.isascii():
            low, origin = buffer.lower(), None
        else:  # matched as normalised: invisible characters dropped, look-alikes made ASCII
            parts = [(normal_char(c).lower(), i) for i, c in enumerate(buffer)]
            low = "".join(p for p, _ in parts)
            origin = [i for p, i in parts for _ in p]
        spans = [
            self._candidate(low, end - len(needle) + 1, needle) for end, needle in self.scrubber.automaton_iter(low)
        ]
        cut = len(low)
        for size in range(min(len(low), self.scrubber.longest_needle - 1), 0, -1):
            if low[-size:] in self.scrubber.needle_prefixes:  # a needle may be arriving
                cut = len(low) - size
                break
        for start, end in spans:
            if end is None:
                cut = min(cut, start)
        changed = True
        while changed:  # never cut through a resolved candidate
            changed = False
            for start, end in spans:
                if end is not None and start < cut < end:
                    cut, changed = start, True
        if origin is None:
            return cut
        return origin[cut] if cut < len(origin) else len(buffer)

    @staticmethod
    def _candidate(low: str, start: int, needle: str) -> tuple[int, int | None]:
        """(start, end) of what a needle at `start` may be part of; end None while it may still grow."""
        kind = _NEEDLE_KIND[needle]
        after = start + len(needle)
        if kind == "private_key":
            start = max(0, low.rfind("-----begin", 0, start))
            marker = low.find("-----end", after)
            if marker >= 0:
                close = low.find("-----", marker + 8)
                return start, (close + 5 if close >= 0 else None)
            return start, (len(low) if len(low) - start > _BLOCK_CHARS else None)
        if kind in TOKEN_KINDS:
            for i in range(after, min(len(low), after + _TOKEN_CHARS)):
                if low[i] not in _TOKEN_CHARSET:
                    return start, i
            return start, (len(low) if len(low) - after >= _TOKEN_CHARS else None)
        while start > 0 and not low[start - 1].isspace():  # `postgres://`, `my_password=`: the whole word
            start -= 1
        words = low[after : after + _PROSE_CHARS].split()
        if len(words) > _PROSE_WORDS or len(low) - after >= _PROSE_CHARS:
            return start, min(len(low), after + _PROSE_CHARS)
        return start, None
