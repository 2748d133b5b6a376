"""Responses API answers: a chat completion as a Response object and its output items."""

from __future__ import annotations

import time
import uuid
from typing import Any

from iir_gateway.inbound.chat_reading import reasoning


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def usage(chat_usage: dict[str, Any] | None) -> dict[str, Any]:
    u = chat_usage or {}
    prompt, completion = int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": int((u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0),
            "cache_write_tokens": 0,  # in OpenAI's schema; vLLM's prefix cache writes are not counted
        },
        "output_tokens": completion,
        "output_tokens_details": {
            "reasoning_tokens": int((u.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
        },
        "total_tokens": prompt + completion,
    }


def echoed_tools(tools: list[Any]) -> list[Any]:
    """The request's tools as a response echoes them: a function tool with its `description`,
    `parameters` and `strict` (null when not given), as OpenAI's schema requires."""
    return [
        {"description": None, "parameters": None, **t, "strict": t.get("strict")}
        if isinstance(t, dict) and t.get("type") == "function"
        else t
        for t in tools
    ]


def logprobs(choice: dict[str, Any]) -> list[dict[str, Any]]:
    """A chat choice's (or chunk choice's) token logprobs as the Responses API writes them: `token`,
    `logprob`, `bytes` and `top_logprobs`, each alternative with its `token`, `logprob` and `bytes`."""
    content = (choice.get("logprobs") or {}).get("content") or []

    def entry(e: dict[str, Any]) -> dict[str, Any]:
        return {"token": e.get("token", ""), "logprob": e.get("logprob", 0.0), "bytes": e.get("bytes") or []}

    return [
        {**entry(e), "top_logprobs": [entry(t) for t in e.get("top_logprobs") or [] if isinstance(t, dict)]}
        for e in content
        if isinstance(e, dict)
    ]


def message_item(
    text: str, item_id: str | None = None, status: str = "completed", token_logprobs: list[Any] | None = None
) -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": token_logprobs or []}
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
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    items = []
    if thought := reasoning(message):
        items.append(reasoning_item(thought))
    if message.get("content"):
        items.append(message_item(message["content"], token_logprobs=logprobs(choice)))
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
        "tools": echoed_tools(body.get("tools") or []),
        "top_logprobs": body.get("top_logprobs", 0),
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": usage(chat_usage) if chat_usage is not None else None,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }
