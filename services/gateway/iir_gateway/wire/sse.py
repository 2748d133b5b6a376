"""Server-sent events framing: upstream bytes → `data:` payloads, and payloads → bytes for the client."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

DONE = b"[DONE]"
DONE_FRAME = b"data: [DONE]\n\n"


def frame(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def named_frames(events: Iterable[tuple[str, Any]]) -> bytes:
    """Frames with an `event:` name each (the Messages and Responses streams)."""
    return b"".join(b"event: %s\ndata: %s\n\n" % (name.encode(), orjson.dumps(data)) for name, data in events)


class SSEParser:
    """Splits a byte stream into the payloads of its events, however the network cut it. Comments and
    `event:`/`id:` lines are dropped (the payloads say what they are); several `data:` lines of one
    event are joined with newlines, as the SSE specification says."""

    __slots__ = ("_tail",)

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        data = self._tail + chunk if self._tail else chunk
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        # The common case, one `data: ` line per event, split at once: no work per event in Python.
        if data.startswith(b"data: ") and data.endswith(b"\n\n"):
            payloads = data[6:-2].split(b"\n\ndata: ")
            if data.count(b"\n") == 2 * len(payloads):
                self._tail = b""
                return payloads
        events = data.split(b"\n\n")
        self._tail = events.pop()
        simple = [e[6:] for e in events if e.startswith(b"data: ") and b"\n" not in e]
        if len(simple) == len(events):
            return simple
        return [p for p in map(_payload, events) if p is not None]

    def flush(self) -> list[bytes]:
        """The last event, when the stream ended without its blank line."""
        tail, self._tail = self._tail, b""
        payload = _payload(tail) if tail.strip() else None
        return [payload] if payload is not None else []


def _payload(event: bytes) -> bytes | None:
    if event.startswith(b"data:") and b"\ndata:" not in event:  # the common case: one line
        line = event.split(b"\n", 1)[0]
        return line[6:] if line.startswith(b"data: ") else line[5:]
    lines = [
        line[6:] if line.startswith(b"data: ") else line[5:] for line in event.split(b"\n") if line.startswith(b"data:")
    ]
    return b"\n".join(lines) if lines else None
