"""OpenAI's Responses API over the gateway's chat form (https://platform.openai.com/docs/api-reference/responses):
a Responses request (with the conversation before it) → a chat request, a chat answer → a Response
object and its output items, and chat chunks → the Responses stream's events."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson

from iir_gateway.errors import APIError

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


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _bad(message: str, param: str) -> APIError:
    return APIError(400, message, code="invalid_value", param=param)


def _content(content: Any, param: str) -> str | list[dict[str, Any]]:
    """Message content: a string, or input/output text and images as chat content parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _bad("Content must be a string or a list of parts.", param)
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "input_image":
            url = part.get("image_url") or ""
            if not url:
                raise _bad("An input_image needs an image_url (file ids are not supported).", f"{param}[{j}]")
            parts.append({"type": "image_url", "image_url": {"url": url, "detail": part.get("detail", "auto")}})
        elif kind == "refusal":
            parts.append({"type": "text", "text": str(part.get("refusal", ""))})
        else:
            raise _bad(f"Content parts of type {kind!r} are not supported.", f"{param}[{j}]")
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def input_messages(items: Any) -> list[dict[str, Any]]:
    """Chat messages for a Responses `input` (a string, or message, function_call and function_call_output items)."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not isinstance(items, list):
        raise _bad("input must be a string or a list of items.", "input")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        param = f"input[{i}]"
        if not isinstance(item, dict):
            raise _bad("Each input item must be an object.", param)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise _bad(f"Unknown role {role!r}.", f"{param}.role")
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
        elif kind in ("reasoning", "item_reference"):
            continue  # reasoning is the upstream's own; references need no text
        else:
            raise _bad(f"Input items of type {kind!r} are not supported.", f"{param}.type")
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
                raise _bad(
                    f"The built-in tool {name!r} cannot be run for this model; use function tools.", f"tools[{i}]"
                )
            raise _bad(f"Tools of type {name!r} are not supported.", f"tools[{i}]")
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
            raise _bad(f"Unknown tool_choice {choice!r}.", "tool_choice")
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": str(choice.get("name", ""))}}
    raise _bad("tool_choice must be auto, required, none or a function.", "tool_choice")


def _response_format(text: Any) -> dict[str, Any] | None:
    fmt = (text or {}).get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt["type"] == "json_object":
        return {"type": "json_object"}
    if fmt["type"] == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    raise _bad(f"Unknown text.format type {fmt['type']!r}.", "text.format.type")


def chat_request(body: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
    """The chat request for a Responses request, after the messages of the conversation so far."""
    messages = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": str(body["instructions"])})
    messages += history + input_messages(body.get("input", []))
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


def usage(chat_usage: dict[str, Any] | None) -> dict[str, Any]:
    u = chat_usage or {}
    prompt, completion = int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": int((u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
        },
        "output_tokens": completion,
        "output_tokens_details": {
            "reasoning_tokens": int((u.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
        },
        "total_tokens": prompt + completion,
    }


def message_item(text: str, item_id: str | None = None, status: str = "completed") -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"type": "message", "id": item_id or new_id("msg"), "status": status, "role": "assistant", "content": [part]}


def call_item(
    call_id: str, name: str, arguments: str, item_id: str | None = None, status: str = "completed"
) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id or new_id("fc"),
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def reasoning_item(text: str, item_id: str | None = None) -> dict[str, Any]:
    return {
        "type": "reasoning",
        "id": item_id or new_id("rs"),
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
    }


def output_items(completion: dict[str, Any]) -> list[dict[str, Any]]:
    message = ((completion.get("choices") or [{}])[0]).get("message") or {}
    items = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if reasoning:
        items.append(reasoning_item(reasoning))
    if message.get("content"):
        items.append(message_item(message["content"]))
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        items.append(
            call_item(call.get("id") or new_id("call"), function.get("name", ""), function.get("arguments", ""))
        )
    return items


def response_object(
    response_id: str,
    body: dict[str, Any],
    model: str,
    output: list[dict[str, Any]],
    chat_usage: dict[str, Any] | None,
    finish_reason: str | None,
    status: str | None = None,
    created_at: int | None = None,
) -> dict[str, Any]:
    """A Response object as OpenAI writes it, for a request `body` and its output."""
    incomplete = finish_reason == "length"
    status = status or ("incomplete" if incomplete else "completed")
    created = created_at or int(time.time())
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "completed_at": int(time.time()) if status in ("completed", "incomplete") else None,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "model": model,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "prompt_cache_key": body.get("prompt_cache_key"),
        "reasoning": {"effort": (body.get("reasoning") or {}).get("effort"), "summary": None},
        "safety_identifier": body.get("safety_identifier"),
        "service_tier": "default",
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "presence_penalty": body.get("presence_penalty", 0.0),
        "frequency_penalty": body.get("frequency_penalty", 0.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_logprobs": body.get("top_logprobs", 0),
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": usage(chat_usage) if chat_usage is not None else None,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


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
                logprobs=[],
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
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning:
                if self.open is None or self.open["type"] != "reasoning":
                    yield from self._open(reasoning_item(""))
                assert self.open is not None
                self.open["content"][0]["text"] += reasoning
                yield self._event(
                    "response.reasoning_text.delta",
                    item_id=self.open["id"],
                    output_index=len(self.output),
                    content_index=0,
                    delta=reasoning,
                )
            if delta.get("content"):
                if self.open is None or self.open["type"] != "message":
                    yield from self._open(message_item("", status="in_progress"))
                assert self.open is not None
                self.open["content"][0]["text"] += delta["content"]
                yield self._event(
                    "response.output_text.delta",
                    item_id=self.open["id"],
                    output_index=len(self.output),
                    content_index=0,
                    delta=delta["content"],
                    logprobs=[],
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
