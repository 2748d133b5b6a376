"""A fake of api.anthropic.com's Messages API (https://docs.anthropic.com/en/api/messages).

It validates requests as the real API does where a translation could go wrong (headers, roles, block
types, tool_result ids, ranges), answers in the real response and SSE event shapes, and chooses a
behaviour by model name: `*-overloaded` answers 529, `*-die` drops the stream midway. A prompt
mentioning "weather" with tools offered gets a `tool_use` answer; a `tool_result` gets a final text.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.common import install_introspection, record, serve, words


def _error(status: int, kind: str, message: str) -> web.Response:
    return web.Response(
        body=orjson.dumps({"type": "error", "error": {"type": kind, "message": message}}),
        status=status,
        content_type="application/json",
        headers={"request-id": f"req_{uuid.uuid4().hex[:24]}"},
    )


def _invalid(message: str) -> web.Response:
    return _error(400, "invalid_request_error", message)


def _validate(body: dict[str, Any]) -> str:
    """The real API's message for what is wrong with `body`, or ""."""
    if not isinstance(body.get("model"), str):
        return "model: Field required"
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        return "max_tokens: Field required"
    if not (0 <= float(body.get("temperature", 0)) <= 1):
        return "temperature: Input should be less than or equal to 1"
    system = body.get("system", "")
    if not isinstance(system, str | list):
        return "system: Input should be a valid string or list"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: Field required"
    tool_ids: set[str] = set()
    for i, m in enumerate(messages):
        if m.get("role") not in ("user", "assistant"):
            return (
                f"messages.{i}.role: Input should be 'user' or 'assistant'"
                " (system prompts go in the top-level `system` parameter)"
            )
        content = m.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list):
            return f"messages.{i}.content: Input should be a valid list"
        for j, b in enumerate(blocks):
            kind = b.get("type")
            if kind not in ("text", "image", "tool_use", "tool_result"):
                return f"messages.{i}.content.{j}.type: unknown content block type {kind!r}"
            if kind == "tool_use":
                if m["role"] != "assistant" or not isinstance(b.get("input"), dict):
                    return f"messages.{i}.content.{j}: tool_use blocks belong to assistant turns, input an object"
                tool_ids.add(b.get("id", ""))
            if kind == "tool_result" and b.get("tool_use_id") not in tool_ids:
                return (
                    f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: "
                    f"{b.get('tool_use_id')}. Each `tool_result` block must have a corresponding `tool_use` "
                    "block in the previous message."
                )
            if kind == "image" and b.get("source", {}).get("type") not in ("base64", "url"):
                return f"messages.{i}.content.{j}.source: invalid image source"
    return ""


def _last_user(body: dict[str, Any]) -> tuple[str, bool]:
    """The last user turn's text, and whether it carries a tool result."""
    content = body["messages"][-1]["content"]
    if isinstance(content, str):
        return content, False
    text = " ".join(b.get("text", "") for b in content if b.get("type") == "text")
    return text, any(b.get("type") == "tool_result" for b in content)


def _plan(body: dict[str, Any]) -> tuple[list[dict[str, Any]], str, str | None]:
    """The content blocks, the stop_reason and the stop_sequence of the answer."""
    text, has_result = _last_user(body)
    if body.get("tools") and "weather" in text.lower() and not has_result:
        tool = body["tools"][0]
        return (
            [
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": f"toolu_{uuid.uuid4().hex[:24]}",
                    "name": tool["name"],
                    "input": {"location": "Paris"},
                },
            ],
            "tool_use",
            None,
        )
    answer = "It is 18 degrees in Paris." if has_result else f"Claude heard: {text}"
    for stop in body.get("stop_sequences") or []:
        if stop in answer:
            return [{"type": "text", "text": answer.split(stop, 1)[0]}], "stop_sequence", stop
    tokens = answer.split(" ")
    if len(tokens) > body["max_tokens"]:
        return [{"type": "text", "text": " ".join(tokens[: body["max_tokens"]])}], "max_tokens", None
    return [{"type": "text", "text": answer}], "end_turn", None


def _input_tokens(body: dict[str, Any]) -> int:
    return words(str(body.get("system", ""))) + sum(words(str(m["content"])) for m in body["messages"])


def make_app(key: str) -> web.Application:
    async def messages(request: web.Request) -> web.StreamResponse:
        if request.headers.get("x-api-key") != key:
            return _error(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return _invalid("anthropic-version: header is required")
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _invalid("There was an issue with your request body: invalid JSON")
        problem = _validate(body)
        if problem:
            return _invalid(problem)
        record(request, body)
        return await answer(request, body)

    app = web.Application()
    app.router.add_post("/v1/messages", messages)
    install_introspection(app)
    return app


async def answer(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    """The Messages API's answer to a valid request (whole, or streamed when it asks), as Anthropic's API
    and Claude on Vertex AI send it."""
    if body["model"].endswith("-overloaded"):
        return _error(529, "overloaded_error", "Overloaded")
    blocks, stop_reason, stop_sequence = _plan(body)
    out_tokens = sum(words(b.get("text", "")) for b in blocks) + sum(5 for b in blocks if b["type"] == "tool_use")
    usage = {
        "input_tokens": _input_tokens(body),
        "output_tokens": out_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 3,
    }
    message = {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": blocks,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage,
    }
    if not body.get("stream"):
        return web.json_response(message, dumps=lambda o: orjson.dumps(o).decode())
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"})
    await resp.prepare(request)

    async def event(kind: str, data: dict[str, Any]) -> None:
        await resp.write(f"event: {kind}\ndata: ".encode() + orjson.dumps({"type": kind, **data}) + b"\n\n")
        await asyncio.sleep(0.005)

    await event(
        "message_start",
        {
            "message": {
                **message,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {**usage, "output_tokens": 1},
            }
        },
    )
    await event("ping", {})
    for index, block in enumerate(blocks):
        if block["type"] == "text":
            await event("content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}})
            for i, word in enumerate(block["text"].split(" ")):
                if body["model"].endswith("-die") and i == 2:
                    assert request.transport is not None
                    request.transport.close()
                    return resp
                await event(
                    "content_block_delta",
                    {"index": index, "delta": {"type": "text_delta", "text": word if i == 0 else " " + word}},
                )
        else:
            await event(
                "content_block_start",
                {
                    "index": index,
                    "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}},
                },
            )
            arguments = orjson.dumps(block["input"]).decode()
            for piece in (arguments[:5], arguments[5:]):
                await event(
                    "content_block_delta",
                    {"index": index, "delta": {"type": "input_json_delta", "partial_json": piece}},
                )
        await event("content_block_stop", {"index": index})
    await event(
        "message_delta",
        {
            "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
            "usage": {"output_tokens": out_tokens},
        },
    )
    await event("message_stop", {})
    return resp


if __name__ == "__main__":
    serve(make_app, __doc__ or "")
