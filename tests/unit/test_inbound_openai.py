"""OpenAI's own operations: requests and answers pass as they are (the same bytes), except the answer's id
when the client chose it; errors in OpenAI's shape."""

from __future__ import annotations

import asyncio

import orjson

from iir_common.logging import request_id_var
from iir_gateway.answer import Answer, Event
from iir_gateway.errors import APIError
from iir_gateway.inbound.openai import CHAT, EMBEDDINGS


def _chunk(answer_id: str, text: str) -> Event:
    return Event(orjson.dumps({"id": answer_id, "choices": [{"index": 0, "delta": {"content": text}}]}))


def test_without_a_client_id_everything_passes_as_it_is() -> None:
    exchange = CHAT.exchange({})
    body = {"model": "m", "messages": []}
    assert exchange.request(body) is body and exchange.native is None
    document = Event(b'{"id":"chatcmpl-1","choices":[]}')
    answer = Answer("local/m", document=document, headers={"x-iir-cache": "miss"})
    assert asyncio.run(exchange.document(answer)) is document.raw  # the upstream's bytes, not a copy
    assert exchange.headers(answer) == {"x-iir-model": "local/m", "x-iir-cache": "miss"}
    frames = exchange.stream(answer)
    first, second = _chunk("c1", "a"), _chunk("c1", "b")
    assert frames.head() == b""
    assert frames.feed(first, []) == b"data: " + first.raw + b"\n\n"
    assert frames.feed(first, [second]) == b"data: " + first.raw + b"\n\ndata: " + second.raw + b"\n\n"
    assert asyncio.run(frames.tail(True)) == b"data: [DONE]\n\n"
    assert asyncio.run(frames.tail(False)) == b""  # a stream that broke off has no [DONE]


def test_the_client_s_request_id_names_the_answer_and_its_events() -> None:
    token = request_id_var.set("mine-1")
    try:
        exchange = CHAT.exchange({"x-request-id": "mine-1"})
        elsewhere = CHAT.exchange({"x-request-id": "not-the-valid-one"})  # IIR made its own id: unchanged
    finally:
        request_id_var.reset(token)
    document = Answer("m", document=Event(b'{"id":"chatcmpl-1","object":"chat.completion"}'))
    assert orjson.loads(asyncio.run(exchange.document(document)))["id"] == "mine-1"
    assert orjson.loads(asyncio.run(elsewhere.document(document)))["id"] == "chatcmpl-1"
    frames = exchange.stream(Answer("m")).feed(_chunk("c1", "a"), [_chunk("c1", "b")])
    ids = [orjson.loads(f.removeprefix(b"data: "))["id"] for f in frames.split(b"\n\n") if f]
    assert ids == ["mine-1", "mine-1"]


def test_errors_have_openai_s_shape() -> None:
    response = EMBEDDINGS.error(APIError(400, "Missing required parameter: 'input'.", code="x", param="input"))
    assert response.status_code == 400
    assert orjson.loads(response.body) == {
        "error": {
            "message": "Missing required parameter: 'input'.",
            "type": "invalid_request_error",
            "param": "input",
            "code": "x",
        },
        "detail": "Missing required parameter: 'input'.",
    }
    assert (EMBEDDINGS.operation, CHAT.operation) == ("embeddings", "chat/completions")
