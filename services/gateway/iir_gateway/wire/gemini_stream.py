"""Gemini `streamGenerateContent?alt=sse` events → OpenAI chat completion chunks, one event at a time.

Each event is a whole `GenerateContentResponse` holding the next parts of the answer; the one with a
`finishReason` (and the final `usageMetadata`) ends it: a finish chunk, then the usage chunk
(`"choices": []`, removed by the pipeline when the client did not ask for it).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from iir_gateway.answer import Event
from iir_gateway.errors import error_body
from iir_gateway.wire.gemini_response import finish_reason, response_id, split_parts, usage

# Google's error codes (HTTP statuses) as the stream's error event.
_ERROR_STATUS = {429: 429, 504: 504}


class GeminiStreamDecoder:
    def __init__(self) -> None:
        self.usage: dict[str, Any] | None = None
        self.done = False
        self._started = False
        self._id = ""
        self._model = ""
        self._created = int(time.time())
        self._calls = 0  # tool calls so far: the index of the next

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> Event:
        data = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        return Event.of(data)

    def decode(self, payload: bytes) -> list[Event]:
        if self.done:
            return []
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return []
        return self._event(data) if isinstance(data, dict) else []

    def decode_all(self, payloads: list[bytes]) -> list[Event]:
        return [event for payload in payloads for event in self.decode(payload)]

    def _event(self, data: dict[str, Any]) -> list[Event]:
        error = data.get("error")
        if isinstance(error, dict):
            self.done = True
            status = _ERROR_STATUS.get(int(error.get("code") or 500), 502)
            return [
                Event(error_body(status, str(error.get("message") or "The upstream failed."), code="upstream_error"))
            ]
        events = []
        if not self._started:
            self._started = True
            self._id, self._model = response_id(data), str(data.get("modelVersion", ""))
            events.append(self._chunk({"role": "assistant", "content": ""}))
        if isinstance(data.get("usageMetadata"), dict):
            self.usage = usage(data["usageMetadata"])
        candidates = data.get("candidates") or []
        candidate = candidates[0] if candidates and isinstance(candidates[0], dict) else {}
        text, thinking, calls = split_parts((candidate.get("content") or {}).get("parts") or [])
        if thinking:
            events.append(self._chunk({"reasoning_content": thinking}))
        if text:
            events.append(self._chunk({"content": text}))
        for call in calls:
            events.append(self._chunk({"tool_calls": [{"index": self._calls, **call}]}))
            self._calls += 1
        blocked = not candidates and (data.get("promptFeedback") or {}).get("blockReason")
        finish = "content_filter" if blocked else finish_reason(candidate.get("finishReason"), self._calls > 0)
        if finish:
            events.append(self._chunk({}, finish))
            events.append(self._finish())
        return events

    def _finish(self) -> Event:
        self.done = True
        self.usage = self.usage or usage(None)
        data = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [],
            "usage": self.usage,
        }
        return Event.of(data)
