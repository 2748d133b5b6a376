"""Anthropic Messages SSE events → OpenAI chat completion chunks, one event at a time.

The usage chunk (`"choices": []`) is always produced at `message_stop`, as an OpenAI upstream asked for
`include_usage` sends it; the pipeline removes it when the client did not ask.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from iir_gateway.answer import Event
from iir_gateway.errors import error_body
from iir_gateway.wire.anthropic_response import finish_reason, usage

_ERROR_STATUS = {"overloaded_error": 502, "api_error": 502, "rate_limit_error": 429, "timeout_error": 504}


class AnthropicStreamDecoder:
    def __init__(self, keep_native: bool = False) -> None:
        self.keep_native = keep_native
        self._native: list[bytes] = []  # payloads not yet attached to an event
        self.usage: dict[str, Any] | None = None
        self.done = False
        self._input: dict[str, Any] = {}
        self._output_tokens = 0
        self._id = ""
        self._model = ""
        self._created = int(time.time())
        self._tool_index: dict[int, int] = {}  # Anthropic content block index → OpenAI tool call index

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> list[Event]:
        data = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
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
        events = self._event(event) if isinstance(event, dict) else []
        if self.keep_native:
            self._native.append(payload)
            if events:  # the upstream's payloads ride on the first event they made (or a later one)
                events[0].native, self._native = self._native, []
        return events

    def decode_all(self, payloads: list[bytes]) -> list[Event]:
        return [event for payload in payloads for event in self.decode(payload)]

    def _event(self, event: dict[str, Any]) -> list[Event]:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self._id, self._model = message.get("id", ""), message.get("model", "")
            self._input = message.get("usage") or {}
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self._tool_index[event.get("index", 0)] = len(self._tool_index)
                return self._chunk(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "id": block.get("id", ""),
                                "type": "function",
                                "function": {"name": block.get("name", ""), "arguments": ""},
                            }
                        ]
                    }
                )
            if block.get("type") == "text" and block.get("text"):
                return self._chunk({"content": block["text"]})
            return []
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta":
                return self._chunk({"content": delta.get("text", "")})
            if dtype == "input_json_delta":
                index = self._tool_index.get(event.get("index", 0), 0)
                return self._chunk(
                    {"tool_calls": [{"index": index, "function": {"arguments": delta.get("partial_json", "")}}]}
                )
            if dtype == "thinking_delta":
                return self._chunk({"reasoning_content": delta.get("thinking", "")})
            return []
        if kind == "message_delta":
            self._output_tokens = int((event.get("usage") or {}).get("output_tokens") or self._output_tokens)
            reason = finish_reason((event.get("delta") or {}).get("stop_reason"))
            return self._chunk({}, reason) if reason else []
        if kind == "message_stop":
            return self._finish()
        if kind == "error":
            err = event.get("error") or {}
            status = _ERROR_STATUS.get(err.get("type", ""), 502)
            self.done = True
            return [Event(error_body(status, err.get("message") or "The upstream failed.", code="upstream_error"))]
        return []  # ping, content_block_stop, and event types added later

    def _finish(self) -> list[Event]:
        self.done = True
        self.usage = usage(self._input, self._output_tokens)
        data = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [],
            "usage": self.usage,
        }
        return [Event.of(data)]
