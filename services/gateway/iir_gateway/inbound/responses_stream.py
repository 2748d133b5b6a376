"""Responses API streams: chat chunks as the Responses stream's events."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from iir_gateway.inbound.chat_reading import first_choices, reasoning
from iir_gateway.inbound.responses_answer import (
    call_item,
    logprobs,
    message_item,
    new_id,
    reasoning_item,
    response_object,
)


class ResponsesStreamEncoder:
    """Chat chunks in, Responses stream events out, each with its `sequence_number`; `output` and
    `final` hold the finished items and Response once `end` ran."""

    def __init__(self, response_id: str, body: dict[str, Any], model: str) -> None:
        self.id, self.body, self.model = response_id, body, model
        self.created_at = int(time.time())
        self.sequence = 0
        self.output: list[dict[str, Any]] = []
        self.open: dict[str, Any] | None = None  # the item being streamed
        self.calls: dict[int, dict[str, Any]] = {}  # chat tool call index → its item
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None
        self.final: dict[str, Any] | None = None

    def _event(self, kind: str, **fields: Any) -> tuple[str, dict[str, Any]]:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return kind, event

    def _response(self, status: str, finish: str | None = None) -> dict[str, Any]:
        return response_object(
            self.id,
            self.body,
            self.model,
            list(self.output),
            self.usage if status != "in_progress" else None,
            finish,
            status=status if status == "in_progress" else None,
            created_at=self.created_at,
        )

    def start(self) -> Iterator[tuple[str, dict[str, Any]]]:
        yield self._event("response.created", response=self._response("in_progress"))
        yield self._event("response.in_progress", response=self._response("in_progress"))

    def _close(self) -> Iterator[tuple[str, dict[str, Any]]]:
        item, self.open = self.open, None
        if item is None:
            return
        index = len(self.output)
        if item["type"] == "message":
            part = item["content"][0]
            yield self._event(
                "response.output_text.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                text=part["text"],
                logprobs=part["logprobs"],
            )
            yield self._event(
                "response.content_part.done", item_id=item["id"], output_index=index, content_index=0, part=part
            )
        elif item["type"] == "reasoning":
            text = item["content"][0]["text"]
            yield self._event(
                "response.reasoning_text.done", item_id=item["id"], output_index=index, content_index=0, text=text
            )
        elif item["type"] == "function_call":
            yield self._event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                name=item["name"],  # OpenAI's schema requires it
                arguments=item["arguments"],
            )
        item["status"] = "completed"
        yield self._event("response.output_item.done", output_index=index, item=item)
        self.output.append(item)

    def _open(self, item: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        yield from self._close()
        self.open = item
        index = len(self.output)
        shown = {**item, "content": []} if item["type"] in ("message", "reasoning") else {**item}
        yield self._event("response.output_item.added", output_index=index, item=shown)
        if item["type"] == "message":
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            yield self._event(
                "response.content_part.added", item_id=item["id"], output_index=index, content_index=0, part=part
            )

    def feed(self, chunk: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in first_choices(chunk):
            delta = choice.get("delta") or {}
            if thought := reasoning(delta):
                if self.open is None or self.open["type"] != "reasoning":
                    yield from self._open(reasoning_item(""))
                assert self.open is not None
                self.open["content"][0]["text"] += thought
                yield self._event(
                    "response.reasoning_text.delta",
                    item_id=self.open["id"],
                    output_index=len(self.output),
                    content_index=0,
                    delta=thought,
                )
            if delta.get("content"):
                if self.open is None or self.open["type"] != "message":
                    yield from self._open(message_item("", status="in_progress"))
                assert self.open is not None
                part = self.open["content"][0]
                part["text"] += delta["content"]
                token_logprobs = logprobs(choice)
                part["logprobs"] += token_logprobs
                yield self._event(
                    "response.output_text.delta",
                    item_id=self.open["id"],
                    output_index=len(self.output),
                    content_index=0,
                    delta=delta["content"],
                    logprobs=token_logprobs,
                )
            for call in delta.get("tool_calls") or []:
                position = int(call.get("index", 0))
                function = call.get("function") or {}
                if position not in self.calls:
                    item = call_item(
                        call.get("id") or new_id("call"), function.get("name", ""), "", status="in_progress"
                    )
                    yield from self._open(item)
                    self.calls[position] = item
                item = self.calls[position]
                if function.get("arguments"):
                    item["arguments"] += function["arguments"]
                    yield self._event(
                        "response.function_call_arguments.delta",
                        item_id=item["id"],
                        output_index=len(self.output),
                        delta=function["arguments"],
                    )
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]

    def end(self, error: dict[str, Any] | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """The closing events: `response.completed`, `response.incomplete`, or `response.failed` with `error`."""
        yield from self._close()
        final = self._response("done", self.finish)
        if error is not None:
            final |= {
                "status": "failed",
                "error": {"code": str(error.get("code") or "server_error"), "message": str(error.get("message") or "")},
            }
        self.final = final
        kind = {"failed": "response.failed", "incomplete": "response.incomplete"}.get(
            final["status"], "response.completed"
        )
        yield self._event(kind, response=final)
