"""OpenAI chat completion request → Anthropic Messages request (https://docs.anthropic.com/en/api/messages)."""

from __future__ import annotations

from typing import Any

from iir_gateway.errors import invalid_value
from iir_gateway.wire.tool_calls import call_arguments

# Anthropic requires max_tokens; OpenAI does not.
DEFAULT_MAX_TOKENS = 4096
_TOOL_CHOICE = {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}


def text_of(content: Any) -> str:
    """The text of a message's content: a string, or the text of its `text` parts (OpenAI's parts and
    Anthropic's blocks alike)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _image(part: dict[str, Any], param: str) -> dict[str, Any]:
    url = (part.get("image_url") or {}).get("url", "") if isinstance(part.get("image_url"), dict) else ""
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type = header[5:].split(";", 1)[0]
        if not data or ";base64" not in header:
            raise invalid_value("Images must be base64 data URLs or http(s) URLs.", param)
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise invalid_value("Images must be base64 data URLs or http(s) URLs.", param)


def _blocks(content: Any, param: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif kind == "image_url":
            blocks.append(_image(part, f"{param}[{j}]"))
        else:
            raise invalid_value(
                f"Content parts of type {kind!r} are not supported for Anthropic models.", f"{param}[{j}]"
            )
    return blocks


def _tool_use(call: dict[str, Any], param: str) -> dict[str, Any]:
    function = call.get("function") or {}
    arguments = call_arguments(call, param)
    return {"type": "tool_use", "id": call.get("id", ""), "name": function.get("name", ""), "input": arguments}


def _messages(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        role, param = m.get("role"), f"messages[{i}]"
        if role in ("system", "developer"):
            system.append(text_of(m.get("content")))
            continue
        if role == "user":
            role, blocks = "user", _blocks(m.get("content"), f"{param}.content")
        elif role == "assistant":
            blocks = _blocks(m.get("content"), f"{param}.content")
            blocks += [_tool_use(c, f"{param}.tool_calls[{j}]") for j, c in enumerate(m.get("tool_calls") or [])]
        elif role == "tool":
            role = "user"
            blocks = [
                {"type": "tool_result", "tool_use_id": m.get("tool_call_id", ""), "content": text_of(m.get("content"))}
            ]
        else:
            raise invalid_value(
                f"Messages with role {role!r} are not supported for Anthropic models; use `tool`.", f"{param}.role"
            )
        if out and out[-1]["role"] == role:  # Anthropic wants user and assistant turns to alternate
            out[-1]["content"] += blocks
        else:
            out.append({"role": role, "content": blocks})
    return "\n\n".join(s for s in system if s), out


def to_anthropic(body: dict[str, Any]) -> dict[str, Any]:
    """The Messages API request for an OpenAI chat completion request (400 for what cannot be expressed)."""
    if (body.get("n") or 1) > 1:
        raise invalid_value("Anthropic models return one choice: `n` must be 1.", "n")
    system, messages = _messages(body["messages"])
    out: dict[str, Any] = {
        "model": body["model"],
        "messages": messages,
        "max_tokens": body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS,
    }
    if system:
        out["system"] = system
    if body.get("temperature") is not None:
        out["temperature"] = min(float(body["temperature"]), 1.0)  # Anthropic's range is 0..1
    for name in ("top_p", "top_k"):
        if body.get(name) is not None:
            out[name] = body[name]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("stream"):
        out["stream"] = True
    if body.get("user"):
        out["metadata"] = {"user_id": body["user"]}
    tools = body.get("tools")
    if tools:
        out["tools"] = [
            {
                "name": t["function"]["name"],
                "description": t["function"].get("description", ""),
                "input_schema": t["function"].get("parameters") or {"type": "object", "properties": {}},
            }
            for t in tools
            if isinstance(t, dict) and isinstance(t.get("function"), dict)
        ]
    choice = body.get("tool_choice")
    if choice is not None and tools:
        if isinstance(choice, str):
            if choice not in _TOOL_CHOICE:
                raise invalid_value(f"Unknown tool_choice {choice!r}.", "tool_choice")
            out["tool_choice"] = dict(_TOOL_CHOICE[choice])
        else:
            out["tool_choice"] = {"type": "tool", "name": (choice.get("function") or {}).get("name", "")}
        if body.get("parallel_tool_calls") is False and out["tool_choice"]["type"] != "none":
            out["tool_choice"]["disable_parallel_tool_use"] = True
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        raise invalid_value("response_format other than text is not supported for Anthropic models.", "response_format")
    return out
