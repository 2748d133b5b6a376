"""Bedrock `converse-stream` events → OpenAI chat completion chunks, one event at a time.

The event stream's framing (`wire.eventstream`) hands each event over as `{"<event type>": {...}}`:
`messageStart` (the role), `contentBlockStart` (a tool call's id and name), `contentBlockDelta` (text,
a tool call's input JSON, reasoning), `contentBlockStop`, `messageStop` (the stop reason: the finish
chunk) and `metadata` (the usage: the usage chunk, `"choices": []`, removed by the pipeline when the
client did not ask for it). An exception event ends the stream with an OpenAI error event.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from iir_gateway.answer import Event
from iir_gateway.errors import error_body
from iir_gateway.wire.bedrock_response import completion_id, finish_reason, usage

_EXCEPTIONS = {
    "throttlingException": 429,
    "validationException": 400,
    "modelStreamErrorException": 502,
    "internalServerException": 502,
    "serviceUnavailableException": 502,
}


class BedrockStreamDecoder:
    def __init__(self) -> None:
        self.usage: dict[str, Any] | None = None
        self.done = False
        self._id = completion_id()
        self._created = int(time.time())
        self._tool_index: dict[int, int] = {}  # content block index → OpenAI tool call index

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> list[Event]:
        data = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": "",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        return [Event.of(data)]

    def decode(self, payload: bytes) -> list[Event]:
        if self.done:
            return []
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return []
        if not isinstance(event, dict) or len(event) != 1:
            return []
        ((kind, data),) = event.items()
        return self._event(kind, data if isinstance(data, dict) else {})

    def decode_all(self, payloads: list[bytes]) -> list[Event]:
        return [event for payload in payloads for event in self.decode(payload)]

    def _event(self, kind: str, data: dict[str, Any]) -> list[Event]:
        if kind == "messageStart":
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "contentBlockStart":
            use = (data.get("start") or {}).get("toolUse")
            if not isinstance(use, dict):
                return []
            index = self._tool_index[int(data.get("contentBlockIndex") or 0)] = len(self._tool_index)
            call = {"index": index, "id": use.get("toolUseId", ""), "type": "function"}
            return self._chunk({"tool_calls": [{**call, "function": {"name": use.get("name", ""), "arguments": ""}}]})
        if kind == "contentBlockDelta":
            delta = data.get("delta") or {}
            if isinstance(delta.get("text"), str):
                return self._chunk({"content": delta["text"]})
            if isinstance(delta.get("toolUse"), dict):
                index = self._tool_index.get(int(data.get("contentBlockIndex") or 0), 0)
                arguments = str(delta["toolUse"].get("input", ""))
                return self._chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]})
            if isinstance(delta.get("reasoningContent"), dict) and delta["reasoningContent"].get("text"):
                return self._chunk({"reasoning_content": delta["reasoningContent"]["text"]})
            return []
        if kind == "messageStop":
            return self._chunk({}, finish_reason(data.get("stopReason")) or "stop")
        if kind == "metadata":
            self.done = True
            self.usage = usage(data.get("usage"))
            chunk = {
                "id": self._id,
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": "",
                "choices": [],
                "usage": self.usage,
            }
            return [Event.of(chunk)]
        if kind.endswith("Exception"):
            self.done = True
            status = _EXCEPTIONS.get(kind, 502)
            message = str(data.get("message") or data.get("Message") or "The upstream failed.")
            return [Event(error_body(status, f"{kind}: {message}", code="upstream_error"))]
        return []  # contentBlockStop, and event types added later
