"""Adds the chunks of an OpenAI stream up into the completion they make (to cache it, or to store a
job's result)."""

from __future__ import annotations

from typing import Any


class StreamAssembler:
    def __init__(self) -> None:
        self.first: dict[str, Any] | None = None
        self.parts: list[str] = []
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None
        self.broken = False

    def add(self, chunk: dict[str, Any]) -> None:
        """Takes the next chunk of the stream."""
        if "error" in chunk:
            self.broken = True
            return
        self.first = self.first or chunk
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("tool_calls"):
                self.broken = True  # tool-call streams are not cached
            self.parts.append(delta.get("content") or choice.get("text") or "")
            self.finish = choice.get("finish_reason") or self.finish
        if chunk.get("usage"):
            self.usage = chunk["usage"]

    def completion(self) -> dict[str, Any] | None:
        if self.broken or self.first is None or self.finish is None:
            return None
        text = "".join(self.parts)
        chat = self.first.get("object") == "chat.completion.chunk"
        choice = {"index": 0, "message": {"role": "assistant", "content": text}} if chat else {"index": 0, "text": text}
        return {
            "id": self.first.get("id", ""),
            "object": "chat.completion" if chat else "text_completion",
            "created": self.first.get("created", 0),
            "model": self.first.get("model", ""),
            "choices": [{**choice, "logprobs": None, "finish_reason": self.finish}],
            "usage": self.usage,
        }
