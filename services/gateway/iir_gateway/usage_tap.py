"""Reads token usage out of an OpenAI SSE stream as it passes, optionally hiding the usage chunk.

The gateway asks upstreams for `stream_options.include_usage` so that every stream can be accounted;
when the client did not ask for it, the usage-only chunk (`"choices": []`) is removed again.
"""

from __future__ import annotations

from typing import Any

import orjson


class UsageTap:
    def __init__(self, strip_usage_chunk: bool) -> None:
        self.strip = strip_usage_chunk
        self.usage: dict[str, Any] | None = None
        self._tail = b""

    def feed(self, chunk: bytes) -> bytes:
        """The complete events in `chunk` (plus what was held back); an incomplete event waits."""
        data = self._tail + chunk if self._tail else chunk
        end = data.rfind(b"\n\n")
        if end < 0:
            self._tail = data
            return b""
        complete, self._tail = data[: end + 2], data[end + 2 :]
        if b'"usage"' not in complete:
            return complete
        kept = []
        for event in complete.split(b"\n\n")[:-1]:
            if event.startswith(b"data: {") and b'"usage"' in event:
                try:
                    obj = orjson.loads(event[6:])
                except orjson.JSONDecodeError:
                    kept.append(event)
                    continue
                if isinstance(obj.get("usage"), dict):
                    self.usage = obj["usage"]
                    if self.strip and not obj.get("choices"):
                        continue
            kept.append(event)
        return b"".join(e + b"\n\n" for e in kept)

    def flush(self) -> bytes:
        tail, self._tail = self._tail, b""
        return tail
