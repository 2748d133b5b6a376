"""The Anthropic Messages API spoken by clients (Claude Code, the `anthropic` SDKs) over the gateway's
OpenAI form: a Messages request → an OpenAI chat request, an OpenAI answer → a Messages answer, and
OpenAI chunks → Messages stream events (https://docs.anthropic.com/en/api/messages,
https://docs.anthropic.com/en/api/messages-streaming). The other direction is `anthropic_request` and
`anthropic_response`, whose mappings this reuses."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import orjson

from iir_gateway.errors import APIError

# OpenAI finish reason → Anthropic stop reason (the inverse of anthropic_response.FINISH_REASONS).
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}


def _bad(message: str, param: str) -> APIError:
    return APIError(400, f"{param}: {message}", code="invalid_value", param=param)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _image(block: dict[str, Any], param: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise _bad("an image needs a source object", param)
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    elif source.get("type") == "url":
        url = str(source.get("url", ""))
    else:
        raise _bad("images must have a base64 or url source", param)
    return {"type": "image_url", "image_url": {"url": url}}


def _user(blocks: list[Any], param: str) -> list[dict[str, Any]]:
    """A user turn: its tool results first (OpenAI `tool` messages follow the calls), then its content."""
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_result":
            text = _text(block.get("content"))
            if block.get("is_error"):
                text = f"Error: {text}"
            out.append({"role": "tool", "tool_call_id": str(block.get("tool_use_id", "")), "content": text})
        elif kind == "text":
            parts.append({"type": "text", "text": str(block.get("text", ""))})
        elif kind == "image":
            parts.append(_image(block, f"{param}[{j}]"))
        else:
            raise _bad(f"content blocks of type {kind!r} are not supported for this model", f"{param}[{j}]")
    if parts:
        only_text = all(p["type"] == "text" for p in parts)
        out.append({"role": "user", "content": "".join(p["text"] for p in parts) if only_text else parts})
    return out


def _assistant(blocks: list[Any], param: str) -> dict[str, Any]:
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            text.append(str(block.get("text", "")))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            function = {"name": str(block.get("name", "")), "arguments": arguments}
            calls.append({"id": str(block.get("id", "")), "type": "function", "function": function})
        elif kind in ("thinking", "redacted_thinking"):
            continue  # an upstream that is not Anthropic cannot verify a thinking block's signature
        else:
            raise _bad(f"content blocks of type {kind!r} are not supported for this model", f"{param}[{j}]")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tools(tools: list[Any]) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise _bad("a tool must be an object", f"tools[{i}]")
        kind = tool.get("type")
        if kind not in (None, "custom"):  # web_search_…, bash_…, computer_…: Anthropic runs them, IIR cannot
            raise _bad(f"the server tool {kind!r} can only be run by Anthropic models", f"tools[{i}]")
        function = {
            "name": str(tool.get("name", "")),
            "description": str(tool.get("description", "")),
            "parameters": tool.get("input_schema") or {"type": "object", "properties": {}},
        }
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: dict[str, Any]) -> tuple[Any, bool]:
    kind = choice.get("type")
    parallel = not choice.get("disable_parallel_tool_use", False)
    if kind == "auto":
        return "auto", parallel
    if kind == "any":
        return "required", parallel
    if kind == "none":
        return "none", parallel
    if kind == "tool":
        return {"type": "function", "function": {"name": str(choice.get("name", ""))}}, parallel
    raise _bad(f"unknown tool_choice type {kind!r}", "tool_choice")


def chat_request(body: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI chat request for a Messages request (400 for what it cannot say). `cache_control` is
    dropped: upstreams other than Anthropic cache prefixes by themselves, or not at all."""
    messages: list[dict[str, Any]] = []
    system = _text(body.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    for i, m in enumerate(body.get("messages") or []):
        param = f"messages[{i}]"
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            raise _bad("role must be 'user' or 'assistant'", f"{param}.role")
        content = m.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list):
            raise _bad("content must be a string or a list of blocks", f"{param}.content")
        if m["role"] == "user":
            messages += _user(blocks, f"{param}.content")
        else:
            messages.append(_assistant(blocks, f"{param}.content"))
    out: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    if body.get("max_tokens") is not None:
        out["max_tokens"] = body["max_tokens"]
    for name in ("temperature", "top_p", "top_k", "stream"):
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("stream"):
        out["stream_options"] = {"include_usage": True}  # message_delta carries the usage
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])
    if body.get("tools"):
        out["tools"] = _tools(body["tools"])
    if isinstance(body.get("tool_choice"), dict) and body.get("tools"):
        out["tool_choice"], parallel = _tool_choice(body["tool_choice"])
        if not parallel:
            out["parallel_tool_calls"] = False
    user = (body.get("metadata") or {}).get("user_id")
    if user:
        out["user"] = str(user)
    return out


def _usage(usage: dict[str, Any] | None) -> dict[str, int]:
    usage = usage or {}
    cached = int(((usage.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0)
    return {
        "input_tokens": int(usage.get("prompt_tokens") or 0) - cached,
        "output_tokens": int(usage.get("completion_tokens") or 0),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def _stop(choice: dict[str, Any], stops: list[str]) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) for an OpenAI choice: vLLM names the stop string that ended it."""
    finish = choice.get("finish_reason") or "stop"
    matched = choice.get("stop_reason")
    if finish == "stop" and isinstance(matched, str) and matched in stops:
        return "stop_sequence", matched
    return STOP_REASONS.get(finish, "end_turn"), None


def tool_input(arguments: str) -> dict[str, Any]:
    """A tool call's input: Anthropic's is always an object, so arguments a model wrote as anything
    else (a bare string, broken JSON) come as `{"_raw": <the text>}`."""
    try:
        parsed = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"_raw": arguments}


def message_id(answer_id: str) -> str:
    return answer_id if answer_id.startswith("msg_") else f"msg_{answer_id or uuid.uuid4().hex}"


def message_response(completion: dict[str, Any], model: str, stops: list[str]) -> dict[str, Any]:
    """The Messages answer for an OpenAI chat completion (its first choice: Messages has one)."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        arguments = tool_input(str(function.get("arguments") or ""))
        content.append(
            {"type": "tool_use", "id": call.get("id", ""), "name": function.get("name", ""), "input": arguments}
        )
    stop_reason, stop_sequence = _stop(choice, stops)
    return {
        "id": message_id(str(completion.get("id", ""))),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": _usage(completion.get("usage")),
    }


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
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning:
                if self.block != "thinking":
                    yield from self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""})
                yield "content_block_delta", self._delta({"type": "thinking_delta", "thinking": reasoning})
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
                        "id": call.get("id", ""),
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
        stop_reason, stop_sequence = _stop(self.choice, self.stops) if self.choice else ("end_turn", None)
        usage = _usage(self.usage)
        yield (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                "usage": {"output_tokens": usage["output_tokens"], "input_tokens": usage["input_tokens"]},
            },
        )
        yield "message_stop", {"type": "message_stop"}
