"""OpenAI chat completion request → Bedrock Converse request
(https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html).

System and developer messages become `system` text blocks; user and assistant turns `messages` of
content blocks (consecutive turns of one role merged, empty texts left out); images (base64 data URLs)
`image` blocks; assistant `tool_calls` `toolUse` blocks and `tool` messages `toolResult` blocks (`json`
when the result is a JSON object, else `text`); `tools` a `toolConfig` of `toolSpec`s and `tool_choice`
its `toolChoice` (auto/required/named; `none` leaves the tools out unless the conversation already used
them); `max_tokens`, `temperature`, `top_p` and `stop` the `inferenceConfig`.
"""

from __future__ import annotations

from typing import Any

import orjson

from iir_gateway.errors import invalid_value
from iir_gateway.wire.anthropic_request import text_of
from iir_gateway.wire.tool_calls import call_arguments

_IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}


def _image(part: dict[str, Any], param: str) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url", "") if isinstance(image, dict) else ""
    header, _, data = url.partition(",")
    media_type = header[5:].split(";", 1)[0] if header.startswith("data:") else ""
    if not data or ";base64" not in header or media_type not in _IMAGE_FORMATS:
        raise invalid_value("Images for Bedrock models must be base64 data URLs of PNG, JPEG, GIF or WebP.", param)
    return {"image": {"format": _IMAGE_FORMATS[media_type], "source": {"bytes": data}}}


def _blocks(content: Any, param: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    blocks = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if part.get("text"):
                blocks.append({"text": part["text"]})
        elif kind == "image_url":
            blocks.append(_image(part, f"{param}[{j}]"))
        else:
            raise invalid_value(
                f"Content parts of type {kind!r} are not supported for Bedrock models.", f"{param}[{j}]"
            )
    return blocks


def _tool_use(call: dict[str, Any], param: str) -> dict[str, Any]:
    function = call.get("function") or {}
    arguments = call_arguments(call, param)
    return {"toolUse": {"toolUseId": call.get("id", ""), "name": function.get("name", ""), "input": arguments}}


def _tool_result(message: dict[str, Any]) -> dict[str, Any]:
    text = text_of(message.get("content"))
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    content = [{"json": value}] if isinstance(value, dict) else [{"text": text or " "}]
    return {"toolResult": {"toolUseId": message.get("tool_call_id", ""), "content": content, "status": "success"}}


def _messages(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        role, param = m.get("role"), f"messages[{i}]"
        if role in ("system", "developer"):
            text = text_of(m.get("content"))
            if text:
                system.append({"text": text})
            continue
        if role == "user":
            blocks = _blocks(m.get("content"), f"{param}.content")
        elif role == "assistant":
            blocks = _blocks(m.get("content"), f"{param}.content")
            blocks += [_tool_use(c, f"{param}.tool_calls[{j}]") for j, c in enumerate(m.get("tool_calls") or [])]
        elif role == "tool":
            role, blocks = "user", [_tool_result(m)]
        else:
            raise invalid_value(
                f"Messages with role {role!r} are not supported for Bedrock models; use `tool`.", f"{param}.role"
            )
        if not blocks:
            continue
        if out and out[-1]["role"] == role:  # Converse wants user and assistant turns to alternate
            out[-1]["content"] += blocks
        else:
            out.append({"role": role, "content": blocks})
    return system, out


def _tool_config(body: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    if not tools:
        return None
    choice = body.get("tool_choice")
    used = any("toolUse" in b or "toolResult" in b for m in messages for b in m["content"])
    if choice == "none" and not used:
        return None
    config: dict[str, Any] = {
        "tools": [
            {
                "toolSpec": {
                    "name": t["function"]["name"],
                    **({"description": t["function"]["description"]} if t["function"].get("description") else {}),
                    "inputSchema": {"json": t["function"].get("parameters") or {"type": "object", "properties": {}}},
                }
            }
            for t in tools
        ]
    }
    if choice == "required":
        config["toolChoice"] = {"any": {}}
    elif choice == "auto":
        config["toolChoice"] = {"auto": {}}
    elif isinstance(choice, dict):
        config["toolChoice"] = {"tool": {"name": (choice.get("function") or {}).get("name", "")}}
    elif choice not in (None, "none"):
        raise invalid_value(f"Unknown tool_choice {choice!r}.", "tool_choice")
    return config


def to_converse(body: dict[str, Any]) -> dict[str, Any]:
    """The Converse request for an OpenAI chat completion request (400 for what cannot be expressed)."""
    if (body.get("n") or 1) > 1:
        raise invalid_value("Bedrock models return one choice: `n` must be 1.", "n")
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        raise invalid_value("response_format other than text is not supported for Bedrock models.", "response_format")
    system, messages = _messages(body["messages"])
    if not messages:
        raise invalid_value("At least one user or assistant message is required.", "messages")
    out: dict[str, Any] = {"messages": messages}
    if system:
        out["system"] = system
    inference: dict[str, Any] = {}
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if limit:
        inference["maxTokens"] = limit
    if body.get("temperature") is not None:
        inference["temperature"] = body["temperature"]
    if body.get("top_p") is not None:
        inference["topP"] = body["top_p"]
    stop = body.get("stop")
    if stop:
        inference["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    if inference:
        out["inferenceConfig"] = inference
    tool_config = _tool_config(body, messages)
    if tool_config is not None:
        out["toolConfig"] = tool_config
    return out
