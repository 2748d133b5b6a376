"""What the gateway answers, before it is HTTP: a whole JSON document, or a stream of JSON events.

Both carry their bytes as they came, parsed only when something reads them, so an answer that nothing
changes leaves as the bytes the upstream sent. Events are OpenAI's format whatever the upstream spoke.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

_UNPARSED: Any = object()


class Event:
    """One JSON value: an answer, or one event of a stream (the payload of one SSE `data:` line).
    `native`: the upstream's own payloads this event was decoded from, when the client speaks the
    upstream's format and may have them untouched (an Anthropic client of an Anthropic model)."""

    __slots__ = ("_data", "native", "raw")

    def __init__(self, raw: bytes, data: Any = _UNPARSED, native: list[bytes] | None = None) -> None:
        self.raw = raw
        self._data = data
        self.native = native

    @classmethod
    def of(cls, data: Any) -> Event:
        return cls(orjson.dumps(data), data)

    @property
    def data(self) -> Any:
        """The parsed value; None when the bytes are not JSON."""
        if self._data is _UNPARSED:
            try:
                self._data = orjson.loads(self.raw)
            except orjson.JSONDecodeError:
                self._data = None
        return self._data

    def json(self) -> dict[str, Any]:
        """The value when it is an object, else an empty one."""
        data = self.data
        return data if isinstance(data, dict) else {}

    def __repr__(self) -> str:
        return f"Event({self.raw[:80]!r})"


class EventStream(Protocol):
    """A stream's events, read once. When it has ended (or was closed), `usage` holds the upstream's
    token usage (None if it sent none) and `completed` says whether it ran to its end."""

    usage: dict[str, Any] | None
    completed: bool

    def __aiter__(self) -> EventStream: ...

    async def __anext__(self) -> Event: ...

    def take_buffered(self) -> list[Event]:
        """The events that can be had now without waiting (what one network read brought), so a writer
        can send them together."""
        ...

    async def aclose(self) -> None:
        """Ends the stream now (the upstream call too); safe to call more than once."""
        ...


class ListStream:
    """An `EventStream` of events known in advance (a cached answer replayed)."""

    def __init__(self, events: Iterable[Event], usage: dict[str, Any] | None) -> None:
        self._events = deque(events)
        self.usage = usage
        self.completed = False

    def __aiter__(self) -> ListStream:
        return self

    async def __anext__(self) -> Event:
        if self._events:
            return self._events.popleft()
        self.completed = True
        raise StopAsyncIteration

    def take_buffered(self) -> list[Event]:
        events = list(self._events)
        self._events.clear()
        return events

    async def aclose(self) -> None:
        self._events.clear()


@dataclass(slots=True)
class Answer:
    """An answer from `model` (its public name): exactly one of `document` and `stream` is set."""

    model: str
    document: Event | None = None
    stream: EventStream | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def usage(self) -> dict[str, Any] | None:
        """A document's `usage` object (a stream's is known when it has ended)."""
        if self.document is None:
            return self.stream.usage if self.stream is not None else None
        usage = self.document.json().get("usage")
        return usage if isinstance(usage, dict) else None
