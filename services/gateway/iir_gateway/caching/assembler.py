"""Adds the chunks of an OpenAI stream up into the answer they make, losing nothing: every choice by
index, its text, reasoning and refusal, its tool calls (ids, names, arguments joined), its logprobs and
finish reason, and the usage. Used to cache a streamed answer and to store an async job's result.

The result has the shape of the non-streamed answer (`chat.completion` or `text_completion`), with
`message.refusal` null when there was none, as OpenAI's schema requires.
"""

from __future__ import annotations

from typing import Any

# Text fields of a chat delta, joined piece by piece.
_DELTA_TEXT = ("content", "reasoning_content", "reasoning", "refusal")


class _Call:
    __slots__ = ("arguments", "id", "name", "type")

    def __init__(self) -> None:
        self.id = ""
        self.type = "function"
        self.name = ""
        self.arguments: list[str] = []


class _Choice:
    __slots__ = ("calls", "finish", "logprobs", "role", "text", "text_logprobs")

    def __init__(self) -> None:
        self.role = "assistant"
        self.text: dict[str, list[str]] = {}
        self.calls: dict[int, _Call] = {}
        self.logprobs: list[Any] | None = None  # chat: the entries of `logprobs.content`
        self.text_logprobs: dict[str, list[Any]] | None = None  # completions: tokens, token_logprobs…
        self.finish: str | None = None


class StreamAssembler:
    def __init__(self) -> None:
        self.first: dict[str, Any] | None = None
        self.choices: dict[int, _Choice] = {}
        self.usage: dict[str, Any] | None = None
        self.fingerprint = ""
        self.broken = False

    def add(self, chunk: dict[str, Any]) -> None:
        """Takes the next chunk of the stream."""
        if "error" in chunk:
            self.broken = True
            return
        self.first = self.first or chunk
        for raw in chunk.get("choices") or []:
            if isinstance(raw, dict):
                self._add_choice(raw)
        if chunk.get("usage"):
            # No nulls where OpenAI's schema wants an object (vLLM sends `prompt_tokens_details: null`).
            self.usage = {k: v for k, v in chunk["usage"].items() if v is not None}
        if chunk.get("system_fingerprint"):  # vLLM sends it on the last chunk
            self.fingerprint = chunk["system_fingerprint"]

    def _add_choice(self, raw: dict[str, Any]) -> None:
        choice = self.choices.get(raw.get("index", 0))
        if choice is None:
            choice = self.choices[raw.get("index", 0)] = _Choice()
        delta = raw.get("delta")
        if isinstance(delta, dict):
            choice.role = delta.get("role") or choice.role
            for name in _DELTA_TEXT:
                piece = delta.get(name)
                if isinstance(piece, str):
                    choice.text.setdefault(name, []).append(piece)
            for call in delta.get("tool_calls") or []:
                self._add_call(choice, call)
        elif isinstance(raw.get("text"), str):
            choice.text.setdefault("text", []).append(raw["text"])
        logprobs = raw.get("logprobs")
        if isinstance(logprobs, dict):
            if isinstance(logprobs.get("content"), list):
                choice.logprobs = (choice.logprobs or []) + logprobs["content"]
            elif "tokens" in logprobs:
                merged = choice.text_logprobs = choice.text_logprobs or {}
                for key, values in logprobs.items():
                    if isinstance(values, list):
                        merged[key] = merged.get(key, []) + values
        choice.finish = raw.get("finish_reason") or choice.finish

    @staticmethod
    def _add_call(choice: _Choice, raw: dict[str, Any]) -> None:
        call = choice.calls.get(raw.get("index", 0))
        if call is None:
            call = choice.calls[raw.get("index", 0)] = _Call()
        call.id = raw.get("id") or call.id
        call.type = raw.get("type") or call.type
        function = raw.get("function") or {}
        call.name = function.get("name") or call.name
        if isinstance(function.get("arguments"), str):
            call.arguments.append(function["arguments"])

    def completion(self) -> dict[str, Any] | None:
        """The whole answer; None when the stream broke off or a choice never finished."""
        if self.broken or self.first is None or not self.choices:
            return None
        if any(c.finish is None for c in self.choices.values()):
            return None
        chat = self.first.get("object") == "chat.completion.chunk"
        out: dict[str, Any] = {
            "id": self.first.get("id", ""),
            "object": "chat.completion" if chat else "text_completion",
            "created": self.first.get("created", 0),
            "model": self.first.get("model", ""),
            "choices": [self._choice(i, c, chat) for i, c in sorted(self.choices.items())],
        }
        if self.usage is not None:
            out["usage"] = self.usage
        if self.fingerprint:
            out["system_fingerprint"] = self.fingerprint
        return out

    @staticmethod
    def _choice(index: int, choice: _Choice, chat: bool) -> dict[str, Any]:
        joined = {name: "".join(parts) for name, parts in choice.text.items()}
        if not chat:
            return {
                "index": index,
                "text": joined.get("text", ""),
                "logprobs": choice.text_logprobs,
                "finish_reason": choice.finish,
            }
        message: dict[str, Any] = {
            "role": choice.role,
            "content": joined.get("content") if "content" in joined or not choice.calls else None,
            "refusal": joined.get("refusal"),
        }
        if choice.calls:
            message["content"] = joined.get("content") or None
            message["tool_calls"] = [
                {"id": c.id, "type": c.type, "function": {"name": c.name, "arguments": "".join(c.arguments)}}
                for _, c in sorted(choice.calls.items())
            ]
        for name in ("reasoning_content", "reasoning"):
            if name in joined:
                message[name] = joined[name]
        # OpenAI's schema requires both `content` and `refusal` in a choice's logprobs.
        logprobs = {"content": choice.logprobs, "refusal": None} if choice.logprobs is not None else None
        return {"index": index, "message": message, "logprobs": logprobs, "finish_reason": choice.finish}
