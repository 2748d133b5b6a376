"""OpenAI Responses requests (https://platform.openai.com/docs/api-reference/responses), after the
conversation they continue, as the gateway's chat requests; 400 for what a chat request cannot say."""

from __future__ import annotations

from typing import Any

import orjson

from iir_gateway.errors import invalid_value
from iir_gateway.inbound.responses_compaction import expanded

# Tools the upstream would have to run itself; a chat upstream cannot, and IIR does not.
BUILT_IN_TOOLS = (
    "web_search",
    "web_search_preview",
    "file_search",
    "computer_use_preview",
    "code_interpreter",
    "image_generation",
    "mcp",
    "local_shell",
)


def _content(content: Any, param: str) -> str | list[dict[str, Any]]:
    """Message content: a string, or input/output text and images as chat content parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise invalid_value("Content must be a string or a list of parts.", param)
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "input_image":
            url = part.get("image_url") or ""
            if not url:
                raise invalid_value("An input_image needs an image_url (file ids are not supported).", f"{param}[{j}]")
            parts.append({"type": "image_url", "image_url": {"url": url, "detail": part.get("detail", "auto")}})
        elif kind == "refusal":
            parts.append({"type": "text", "text": str(part.get("refusal", ""))})
        else:
            raise invalid_value(f"Content parts of type {kind!r} are not supported.", f"{param}[{j}]")
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def input_messages(items: Any) -> list[dict[str, Any]]:
    """Chat messages for a Responses `input` (a string, or message, function_call, function_call_output and
    compaction items)."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not isinstance(items, list):
        raise invalid_value("input must be a string or a list of items.", "input")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        param = f"input[{i}]"
        if not isinstance(item, dict):
            raise invalid_value("Each input item must be an object.", param)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise invalid_value(f"Unknown role {role!r}.", f"{param}.role")
            out.append(
                {
                    "role": "system" if role == "developer" else role,
                    "content": _content(item.get("content"), f"{param}.content"),
                }
            )
        elif kind == "function_call":
            call = {
                "id": str(item.get("call_id", "")),
                "type": "function",
                "function": {"name": str(item.get("name", "")), "arguments": str(item.get("arguments", ""))},
            }
            if out and out[-1]["role"] == "assistant" and "tool_calls" in out[-1]:
                out[-1]["tool_calls"].append(call)  # parallel calls: one assistant turn
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else orjson.dumps(output).decode()
            out.append({"role": "tool", "tool_call_id": str(item.get("call_id", "")), "content": text})
        elif kind == "compaction":  # a conversation /v1/responses/compact folded: it comes first
            out.extend(expanded(item, param))
        elif kind in ("reasoning", "item_reference"):
            continue  # reasoning is the upstream's own; references need no text
        else:
            raise invalid_value(f"Input items of type {kind!r} are not supported.", f"{param}.type")
    return out


def output_messages(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chat messages of a response's output, to continue the conversation after it."""
    return input_messages([item for item in output if item.get("type") in ("message", "function_call")])


def _tools(tools: list[Any]) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            name = kind if isinstance(kind, str) else "?"
            if name.startswith(BUILT_IN_TOOLS):
                raise invalid_value(
                    f"The built-in tool {name!r} cannot be run for this model; use function tools.", f"tools[{i}]"
                )
            raise invalid_value(f"Tools of type {name!r} are not supported.", f"tools[{i}]")
        function = {
            "name": str(tool.get("name", "")),
            "parameters": tool.get("parameters") or {"type": "object", "properties": {}},
        }
        if tool.get("description"):
            function["description"] = tool["description"]
        if tool.get("strict") is not None:
            function["strict"] = bool(tool["strict"])
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, str):
        if choice not in ("auto", "required", "none"):
            raise invalid_value(f"Unknown tool_choice {choice!r}.", "tool_choice")
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": str(choice.get("name", ""))}}
    raise invalid_value("tool_choice must be auto, required, none or a function.", "tool_choice")


def _response_format(text: Any) -> dict[str, Any] | None:
    fmt = (text or {}).get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt["type"] == "json_object":
        return {"type": "json_object"}
    if fmt["type"] == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    raise invalid_value(f"Unknown text.format type {fmt['type']!r}.", "text.format.type")


def _check_outputs(messages: list[dict[str, Any]]) -> None:
    """400, as OpenAI answers, for a function_call_output no earlier function_call of the conversation made."""
    calls: set[str] = set()
    for message in messages:
        for call in message.get("tool_calls") or ():
            calls.add(str(call.get("id", "")))
        if message.get("role") == "tool" and message.get("tool_call_id") not in calls:
            call_id = str(message.get("tool_call_id"))[:100]
            raise invalid_value(f"No tool call found for function call output with call_id {call_id}.", "input")


LOGPROBS = "message.output_text.logprobs"  # the `include` value that asks for the text's logprobs


def chat_request(body: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
    """The chat request for a Responses request, after the messages of the conversation so far."""
    messages = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": str(body["instructions"])})
    messages += history + input_messages(body.get("input", []))
    _check_outputs(messages)
    out: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    if body.get("max_output_tokens") is not None:
        out["max_tokens"] = body["max_output_tokens"]
    for name in (
        "temperature",
        "top_p",
        "parallel_tool_calls",
        "user",
        "stream",
        "presence_penalty",
        "frequency_penalty",
    ):
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("stream"):
        out["stream_options"] = {"include_usage": True}
    if LOGPROBS in (body.get("include") or ()):  # each output token's logprob, and its top alternatives
        out["logprobs"] = True
        if body.get("top_logprobs"):
            out["top_logprobs"] = body["top_logprobs"]
    if body.get("tools"):
        out["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None and body.get("tools"):
        out["tool_choice"] = _tool_choice(body["tool_choice"])
    fmt = _response_format(body.get("text"))
    if fmt:
        out["response_format"] = fmt
    effort = (body.get("reasoning") or {}).get("effort") if isinstance(body.get("reasoning"), dict) else None
    if effort:
        out["reasoning_effort"] = effort
    return out
