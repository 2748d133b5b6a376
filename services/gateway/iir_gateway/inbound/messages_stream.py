"""Anthropic Messages streams: OpenAI chunks as Messages stream events
(https://docs.anthropic.com/en/api/messages-streaming)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from iir_gateway.inbound.chat_reading import first_choices, reasoning
from iir_gateway.inbound.messages_answer import message_id, stop, tool_input, tool_use_id, usage


class MessagesStreamEncoder:
    """OpenAI chunks in, Messages stream events out: `message_start`, then for each content block its
    `content_block_start`, deltas and `content_block_stop`, then `message_delta` (stop reason, usage)
    and `message_stop`. Only the first choice is kept (Messages has one)."""

    def __init__(self, model: str, stops: list[str], input_tokens: int) -> None:
        self.model, self.stops, self.input_tokens = model, stops, input_tokens
        self.started = False
        self.block: str | None = None  # the open block's type
        self.index = -1
        self.tool_blocks: dict[int, int] = {}  # OpenAI tool call index → block index
        self.held: dict[int, str] = {}  # arguments that do not start an object, sent whole at the block's end
        self.open_tool: int | None = None
        self.streaming: set[int] = set()  # tool calls whose arguments pass as they come
        self.choice: dict[str, Any] = {}
        self.usage: dict[str, Any] | None = None

    def _start(self, chunk: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        self.started = True
        message: dict[str, Any] = {
            "id": message_id(str(chunk.get("id", ""))),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": 0},
        }
        yield "message_start", {"type": "message_start", "message": message}

    def _open(self, kind: str, block: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        yield from self._close()
        self.index += 1
        self.block = kind
        yield "content_block_start", {"type": "content_block_start", "index": self.index, "content_block": block}

    def _close(self) -> Iterator[tuple[str, dict[str, Any]]]:
        if self.block is not None:
            held = self.held.pop(self.open_tool, None) if self.open_tool is not None else None
            if held is not None:
                partial = {"type": "input_json_delta", "partial_json": orjson.dumps(tool_input(held)).decode()}
                yield "content_block_delta", self._delta(partial)
            yield "content_block_stop", {"type": "content_block_stop", "index": self.index}
            self.block, self.open_tool = None, None

    def _delta(self, delta: dict[str, Any]) -> dict[str, Any]:
        return {"type": "content_block_delta", "index": self.index, "delta": delta}

    def feed(self, chunk: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        """The events for one OpenAI chunk (an `{"error": …}` chunk becomes an `error` event)."""
        if "error" in chunk:
            err = chunk.get("error") or {}
            message = str(err.get("message") or "The upstream failed.")
            yield "error", {"type": "error", "error": {"type": "api_error", "message": message}}
            return
        if not self.started:
            yield from self._start(chunk)
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in first_choices(chunk):
            delta = choice.get("delta") or {}
            if thought := reasoning(delta):
                if self.block != "thinking":
                    yield from self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""})
                yield "content_block_delta", self._delta({"type": "thinking_delta", "thinking": thought})
            if delta.get("content"):
                if self.block != "text":
                    yield from self._open("text", {"type": "text", "text": ""})
                yield "content_block_delta", self._delta({"type": "text_delta", "text": delta["content"]})
            for call in delta.get("tool_calls") or []:
                position = int(call.get("index", 0))
                function = call.get("function") or {}
                if position not in self.tool_blocks:
                    block = {
                        "type": "tool_use",
                        "id": tool_use_id(str(call.get("id") or "")),
                        "name": function.get("name", ""),
                        "input": {},
                    }
                    yield from self._open("tool_use", block)
                    self.tool_blocks[position] = self.index
                    self.open_tool = position
                piece = function.get("arguments")
                if piece:
                    if position in self.held or (position not in self.streaming and not piece.lstrip().startswith("{")):
                        self.held[position] = self.held.get(position, "") + piece  # not an object: sent at the end
                        continue
                    self.streaming.add(position)
                    partial = {"type": "input_json_delta", "partial_json": piece}
                    yield "content_block_delta", {**self._delta(partial), "index": self.tool_blocks[position]}
            if choice.get("finish_reason"):
                self.choice = choice

    def end(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """The closing events, once the OpenAI stream ran to its end."""
        if not self.started:
            yield from self._start({})
        yield from self._close()
        called = bool(self.tool_blocks)
        stop_reason, stop_sequence = stop(self.choice, self.stops, called) if self.choice else ("end_turn", None)
        used = usage(self.usage)
        yield (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                "usage": {"output_tokens": used["output_tokens"], "input_tokens": used["input_tokens"]},
            },
        )
        yield "message_stop", {"type": "message_stop"}
