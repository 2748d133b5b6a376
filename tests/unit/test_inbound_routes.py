"""The one route table, and the ASGI fast path serving each of its protocols through the one entry: the
body translated once the key is known, the answer or error written as the protocol's clients expect."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, MutableMapping
from typing import Any, cast

import orjson
from fastapi import FastAPI

from iir_gateway.answer import Answer, Event, ListStream
from iir_gateway.inbound.routes import ROUTES, batch_endpoints, fast_routes
from iir_gateway.inference.fastpath import InferenceFastPath
from iir_gateway.pipeline.context import RequestContext
from iir_gateway.pipeline.pipeline import Pipeline
from iir_gateway.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest


class _Pipeline:
    """Reads the body as the Validate step does, and answers with `answer(ctx)`."""

    def __init__(self, answer: Callable[[RequestContext], Answer]) -> None:
        self.answer = answer
        self.seen: list[RequestContext] = []

    async def run(self, ctx: RequestContext) -> Answer:
        self.seen.append(ctx)
        assert ctx.read_body is not None
        ctx.body = await ctx.read_body()
        return self.answer(ctx)


async def _fallback(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("not served by the fast path")


def _post(pipeline: _Pipeline, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of a POST served by the fast path."""
    fast = InferenceFastPath(cast(FastAPI, _fallback), cast(Pipeline, pipeline), fast_routes(), 1 << 20)
    sent: list[MutableMapping[str, Any]] = []
    given = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if not given.is_set():
            given.set()
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client stays
        raise AssertionError

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": [], "client": ("10.0.0.1", 5)}
    asyncio.run(fast(scope, receive, send))
    start, *bodies = sent
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, b"".join(m.get("body", b"") for m in bodies)


def _completion(ctx: RequestContext) -> Answer:
    data = {"id": "c1", "choices": [{"index": 0, "message": {"content": "Hi"}, "finish_reason": "stop"}]}
    return Answer("local/m", document=Event.of(data))


def test_the_table_drives_the_fast_path_and_batches() -> None:
    assert list(fast_routes()) == ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/messages"]
    assert {path: (p.operation, p.schema) for path, p in batch_endpoints().items()} == {
        "/v1/chat/completions": ("chat/completions", ChatCompletionRequest),
        "/v1/completions": ("completions", CompletionRequest),
        "/v1/embeddings": ("embeddings", EmbeddingRequest),
        "/v1/responses": ("chat/completions", ChatCompletionRequest),
    }
    assert [r.name for r in ROUTES] == ["chat_completions", "completions", "embeddings", "responses", "messages"]


def test_openai_passes_as_it_is_and_messages_are_translated_both_ways() -> None:
    pipeline = _Pipeline(_completion)
    chat = b'{"model":"local/m","messages":[{"role":"user","content":"Hi"}]}'
    status, headers, body = _post(pipeline, "/v1/chat/completions", chat)
    assert status == 200 and headers["x-iir-model"] == "local/m" and orjson.loads(body)["id"] == "c1"
    assert pipeline.seen[-1].operation == "chat/completions" and pipeline.seen[-1].native is None

    messages = {"model": "local/m", "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}]}
    status, headers, body = _post(pipeline, "/v1/messages", orjson.dumps(messages))
    ctx = pipeline.seen[-1]
    assert ctx.body == {"model": "local/m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5}
    assert ctx.native is not None and ctx.native.wire == "anthropic"
    assert status == 200 and "request-id" in headers
    assert orjson.loads(body)["content"] == [{"type": "text", "text": "Hi"}]


def test_bad_bodies_are_a_400_in_each_api_s_shape() -> None:
    pipeline = _Pipeline(_completion)
    status, _, body = _post(pipeline, "/v1/embeddings", b"{")
    assert status == 400 and orjson.loads(body)["error"]["code"] == "invalid_json"
    status, headers, body = _post(pipeline, "/v1/messages", b'{"model": "local/m", "messages": []}')
    assert status == 400 and "request-id" in headers
    assert orjson.loads(body) == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
        "detail": "max_tokens: Field required",
    }


def test_a_stream_goes_through_the_one_event_loop() -> None:
    def streamed(ctx: RequestContext) -> Answer:
        chunk = {"id": "c1", "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"}]}
        return Answer("local/m", stream=ListStream([Event.of(chunk)], None))

    pipeline = _Pipeline(streamed)
    chat = b'{"model":"local/m","messages":[{"role":"user","content":"Hi"}],"stream":true}'
    status, headers, body = _post(pipeline, "/v1/chat/completions", chat)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert body.startswith(b"data: {") and body.endswith(b"data: [DONE]\n\n")
    messages = {"model": "local/m", "max_tokens": 5, "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
    status, _, body = _post(pipeline, "/v1/messages", orjson.dumps(messages))
    assert body.startswith(b"event: message_start\n") and body.endswith(
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
