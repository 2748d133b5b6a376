"""The Messages API over the gateway's OpenAI form: requests, answers and stream events translated."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from iir_common.logging import request_id_var
from iir_gateway.answer import Answer, Event
from iir_gateway.errors import APIError
from iir_gateway.inbound.messages import MESSAGES
from iir_gateway.inbound.messages_answer import message_response
from iir_gateway.inbound.messages_request import chat_request
from iir_gateway.inbound.messages_stream import MessagesStreamEncoder


def test_a_request_with_every_kind_of_block() -> None:
    body = {
        "model": "local/m",
        "max_tokens": 10,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u1"},
        "tools": [{"name": "f", "description": "d", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}},
                    {"type": "text", "text": "What?"},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "42"}]},
                    {"type": "text", "text": "So?"},
                ],
            },
        ],
    }
    out = chat_request(body)
    assert out["messages"] == [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
                {"type": "text", "text": "What?"},
            ],
        },
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "42"},  # before the user's text
        {"role": "user", "content": "So?"},
    ]
    assert out["stop"] == ["END"] and out["user"] == "u1" and out["max_tokens"] == 10
    assert out["tool_choice"] == "required" and out["parallel_tool_calls"] is False
    assert out["tools"] == [
        {"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"messages": [{"role": "system", "content": "x"}]},
        {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
        {"messages": [], "tools": [{"type": "bash_20250124", "name": "bash"}]},
        {"messages": [], "tools": [{"name": "f"}], "tool_choice": {"type": "sometimes"}},
    ],
)
def test_what_cannot_be_said_is_a_400(body: dict[str, Any]) -> None:
    with pytest.raises(APIError) as refused:
        chat_request({"model": "m", "max_tokens": 1, **body})
    assert refused.value.status == 400


def test_an_answer_with_reasoning_and_a_tool_call() -> None:
    completion = {
        "id": "chatcmpl-1",
        "choices": [
            {
                "index": 0,
                "message": {
                    "content": "ok",
                    "reasoning_content": "think",
                    "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": '{"x":2}'}}],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 4}},
    }
    message = message_response(completion, "local/m", [])
    assert message["id"] == "msg_chatcmpl-1" and message["stop_reason"] == "tool_use"
    assert [b["type"] for b in message["content"]] == ["thinking", "text", "tool_use"]
    assert message["content"][2]["input"] == {"x": 2}
    assert message["usage"] == {
        "input_tokens": 6,
        "output_tokens": 3,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 4,
    }


def test_a_stream_of_text_then_a_tool_call() -> None:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": "c", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    encoder = MessagesStreamEncoder("local/m", [], 7)
    events = []
    for c in (
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hi"}),
        chunk({"tool_calls": [{"index": 0, "id": "t1", "function": {"name": "f", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}, "tool_calls"),
        {"id": "c", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 5}},
    ):
        events += list(encoder.feed(c))
    events += list(encoder.end())
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[4][1]["content_block"] == {"type": "tool_use", "id": "toolu_t1", "name": "f", "input": {}}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use" and events[-2][1]["usage"]["output_tokens"] == 5


def test_arguments_that_are_not_an_object_arrive_whole_as_one() -> None:
    """A small model may write `"Paris"` as a call's arguments; Anthropic's input is an object."""
    encoder = MessagesStreamEncoder("local/m", [], 1)
    chunks = [
        {
            "id": "c",
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "id": "t", "function": {"name": "f", "arguments": ""}}]},
                }
            ],
        },
        {
            "id": "c",
            "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '"Par'}}]}}],
        },
        {
            "id": "c",
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": 'is"'}}]},
                    "finish_reason": "tool_calls",
                }
            ],
        },
    ]
    events = [e for c in chunks for e in encoder.feed(c)] + list(encoder.end())
    deltas = [d["delta"]["partial_json"] for name, d in events if name == "content_block_delta"]
    assert deltas == ['{"_raw":"\\"Paris\\""}']
    message = message_response(
        {
            "choices": [
                {
                    "message": {"tool_calls": [{"id": "t", "function": {"name": "f", "arguments": '"Paris"'}}]},
                    "finish_reason": "tool_calls",
                }
            ]
        },
        "m",
        [],
    )
    assert message["content"][0]["input"] == {"_raw": '"Paris"'}


def test_the_decoder_keeps_every_upstream_payload_in_order() -> None:
    """Kept for an Anthropic client: each payload rides on the first OpenAI event made after it, so
    writing the events' payloads gives Anthropic's stream back byte for byte."""
    import orjson

    from iir_gateway.wire.anthropic_stream import AnthropicStreamDecoder

    payloads = [
        orjson.dumps(e)
        for e in (
            {"type": "message_start", "message": {"id": "msg_1", "model": "claude", "usage": {"input_tokens": 3}}},
            {"type": "ping"},
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "thinking", "thinking": "", "signature": ""},
            },
            {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig"}},
            {"type": "content_block_stop", "index": 0},
            {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
            {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hi"}},
            {"type": "content_block_stop", "index": 1},
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}},
            {"type": "message_stop"},
        )
    ]
    decoder = AnthropicStreamDecoder(keep_native=True)
    events = decoder.decode_all(payloads)
    assert [p for e in events for p in e.native or ()] == payloads  # the signature included
    assert AnthropicStreamDecoder().decode_all(payloads)[0].native is None  # only when asked


def _frames(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of each SSE frame."""
    out = []
    for block in filter(None, raw.split(b"\n\n")):
        name, data = block.split(b"\n")
        out.append((name.removeprefix(b"event: ").decode(), orjson.loads(data.removeprefix(b"data: "))))
    return out


def test_a_bad_body_is_a_400_in_anthropic_s_shape_with_the_request_id() -> None:
    exchange = MESSAGES.exchange({})
    with pytest.raises(APIError) as missing:
        exchange.request({"model": "local/m", "messages": []})
    assert missing.value.message == "max_tokens: Field required"  # as Anthropic words it
    with pytest.raises(APIError) as untranslatable:
        exchange.request({"model": "m", "max_tokens": 1, "messages": [{"role": "tool", "content": "x"}]})
    assert untranslatable.value.message.startswith("messages[0].role: ")
    token = request_id_var.set("rid-1")
    try:
        response = MESSAGES.error(missing.value)
    finally:
        request_id_var.reset(token)
    assert response.status_code == 400 and response.headers["request-id"] == "rid-1"
    assert orjson.loads(response.body) == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
        "detail": "max_tokens: Field required",
    }


def test_a_document_is_a_message_or_anthropic_s_own_bytes() -> None:
    exchange = MESSAGES.exchange({})
    body = {
        "model": "claude/x",
        "max_tokens": 5,
        "stop_sequences": ["END"],
        "messages": [{"role": "user", "content": "Hi"}],
    }
    assert exchange.request(body)["messages"] == [{"role": "user", "content": "Hi"}]
    assert exchange.native is not None and exchange.native.body == body  # for an Anthropic model, as written
    completion = {
        "id": "c1",
        "choices": [{"message": {"content": "Yo"}, "finish_reason": "stop", "stop_reason": "END"}],
    }
    translated = orjson.loads(asyncio.run(exchange.document(Answer("claude/x", document=Event.of(completion)))))
    assert translated["id"] == "msg_c1" and translated["model"] == "claude/x"
    assert (translated["stop_reason"], translated["stop_sequence"]) == ("stop_sequence", "END")
    own = b'{"id":"msg_01","type":"message"}'
    native = Answer("claude/x", document=Event(b"{}", native=[own]), headers={"x-iir-cache": "miss"})
    assert asyncio.run(exchange.document(native)) is own
    assert exchange.headers(native)["x-iir-model"] == "claude/x" and "request-id" in exchange.headers(native)


def test_a_stream_in_messages_events_or_anthropic_s_own() -> None:
    exchange = MESSAGES.exchange({})
    exchange.request({"model": "local/m", "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}]})
    frames = exchange.stream(Answer("local/m"))
    chunk = {"id": "c", "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"}]}
    body = frames.head() + frames.feed(Event.of(chunk), []) + asyncio.run(frames.tail(True))
    names = [name for name, _ in _frames(body)]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert _frames(body)[0][1]["message"]["usage"]["input_tokens"] > 0  # the prompt's estimate

    own = [orjson.dumps({"type": "message_start", "message": {}}), orjson.dumps({"type": "ping"})]
    passed = exchange.stream(Answer("claude/x"))
    broken = Event.of({"error": {"message": "upstream went away"}})
    body = passed.feed(Event(b"{}", native=own), [broken]) + asyncio.run(passed.tail(True))
    assert body.startswith(b"event: message_start\ndata: " + own[0] + b"\n\nevent: ping\ndata: " + own[1])
    assert _frames(body)[-1] == (
        "error",
        {"type": "error", "error": {"type": "api_error", "message": "upstream went away"}},
    )
    assert asyncio.run(exchange.stream(Answer("m")).tail(False)) == b""  # broken off: no message_stop
