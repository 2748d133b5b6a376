"""Anthropic Messages requests (Claude Code, the `anthropic` SDKs) as the gateway's OpenAI chat requests
(https://docs.anthropic.com/en/api/messages); 400 for what a chat request cannot say."""

from __future__ import annotations

from typing import Any

import orjson

from iir_gateway.errors import invalid_value
from iir_gateway.wire.anthropic_request import text_of


def _image(block: dict[str, Any], param: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise invalid_value("an image needs a source object", param, named=True)
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    elif source.get("type") == "url":
        url = str(source.get("url", ""))
    else:
        raise invalid_value("images must have a base64 or url source", param, named=True)
    return {"type": "image_url", "image_url": {"url": url}}


def _user(blocks: list[Any], param: str) -> list[dict[str, Any]]:
    """A user turn: its tool results first (OpenAI `tool` messages follow the calls), then its content."""
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_result":
            text = text_of(block.get("content"))
            if block.get("is_error"):
                text = f"Error: {text}"
            out.append({"role": "tool", "tool_call_id": str(block.get("tool_use_id", "")), "content": text})
        elif kind == "text":
            parts.append({"type": "text", "text": str(block.get("text", ""))})
        elif kind == "image":
            parts.append(_image(block, f"{param}[{j}]"))
        else:
            raise invalid_value(
                f"content blocks of type {kind!r} are not supported for this model", f"{param}[{j}]", named=True
            )
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
            raise invalid_value(
                f"content blocks of type {kind!r} are not supported for this model", f"{param}[{j}]", named=True
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tools(tools: list[Any]) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise invalid_value("a tool must be an object", f"tools[{i}]", named=True)
        kind = tool.get("type")
        if kind not in (None, "custom"):  # web_search_…, bash_…, computer_…: Anthropic runs them, IIR cannot
            raise invalid_value(
                f"the server tool {kind!r} can only be run by Anthropic models", f"tools[{i}]", named=True
            )
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
    raise invalid_value(f"unknown tool_choice type {kind!r}", "tool_choice", named=True)


def chat_request(body: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI chat request for a Messages request (400 for what it cannot say). `cache_control` is
    dropped: upstreams other than Anthropic cache prefixes by themselves, or not at all."""
    messages: list[dict[str, Any]] = []
    system = text_of(body.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    for i, m in enumerate(body.get("messages") or []):
        param = f"messages[{i}]"
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            raise invalid_value("role must be 'user' or 'assistant'", f"{param}.role", named=True)
        content = m.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list):
            raise invalid_value("content must be a string or a list of blocks", f"{param}.content", named=True)
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
