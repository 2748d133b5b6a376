"""OpenAI ⇄ Anthropic Messages translation, field by field (the integration tests cover the round trips)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from iir_gateway.errors import APIError
from iir_gateway.wire.anthropic_request import to_anthropic
from iir_gateway.wire.anthropic_response import from_anthropic
from iir_gateway.wire.anthropic_stream import AnthropicStreamDecoder
from iir_gateway.wire.sse import SSEParser


def test_request_images_tools_and_choices() -> None:
    out = to_anthropic(
        {
            "model": "claude",
            "max_completion_tokens": 99,
            "top_p": 0.5,
            "stop": "END",
            "parallel_tool_calls": False,
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "messages": [
                {"role": "developer", "content": [{"type": "text", "text": "rules"}]},
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                        {"type": "image_url", "image_url": {"url": "https://x.test/cat.jpg"}},
                    ],
                },
            ],
        }
    )
    assert out["system"] == "rules" and out["max_tokens"] == 99 and out["top_p"] == 0.5
    assert out["stop_sequences"] == ["END"]
    assert out["tools"] == [{"name": "f", "description": "", "input_schema": {"type": "object", "properties": {}}}]
    assert out["tool_choice"] == {"type": "tool", "name": "f", "disable_parallel_tool_use": True}
    assert out["messages"][0]["content"] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
        {"type": "image", "source": {"type": "url", "url": "https://x.test/cat.jpg"}},
    ]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "function", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "messages[0].content[0]"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc"}}]}]},
            "messages[0].content[0]",
        ),
        (
            {"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}]}]},
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}},
            "response_format",
        ),
        (
            {
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": "sometimes",
            },
            "tool_choice",
        ),
    ],
)
def test_what_anthropic_cannot_express_is_a_400_naming_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(APIError) as exc:
        to_anthropic({"model": "claude", **body})
    assert exc.value.status == 400 and exc.value.param == param


def test_response_with_thinking_tool_use_and_cache_usage() -> None:
    out = from_anthropic(
        {
            "id": "msg_1",
            "model": "claude",
            "stop_reason": "tool_use",
            "content": [
                {"type": "thinking", "thinking": "hmm"},
                {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}},
            ],
            "usage": {
                "input_tokens": 10,
                "cache_creation_input_tokens": 5,
                "cache_read_input_tokens": 20,
                "output_tokens": 7,
            },
        }
    )
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert choice["message"]["reasoning_content"] == "hmm"
    assert choice["message"]["tool_calls"] == [
        {"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
    ]
    assert out["usage"] == {
        "prompt_tokens": 35,
        "completion_tokens": 7,
        "total_tokens": 42,
        "prompt_tokens_details": {"cached_tokens": 20},
    }
    assert from_anthropic({"content": [], "stop_reason": "refusal"})["choices"][0]["finish_reason"] == "content_filter"


def sse(kind: str, **data: object) -> bytes:
    return f"event: {kind}\r\ndata: ".encode() + orjson.dumps({"type": kind, **data}) + b"\r\n\r\n"


STREAM = b"".join(
    [
        sse(
            "message_start",
            message={"id": "msg_1", "model": "claude", "usage": {"input_tokens": 4, "output_tokens": 1}},
        ),
        sse("ping"),
        sse("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        sse("content_block_delta", index=0, delta={"type": "text_delta", "text": "Hé"}),
        sse("content_block_stop", index=0),
        sse("content_block_start", index=1, content_block={"type": "tool_use", "id": "t1", "name": "f", "input": {}}),
        sse("content_block_delta", index=1, delta={"type": "input_json_delta", "partial_json": '{"a":'}),
        sse("content_block_delta", index=1, delta={"type": "input_json_delta", "partial_json": "1}"}),
        sse("message_delta", delta={"stop_reason": "tool_use"}, usage={"output_tokens": 9}),
        sse("message_stop"),
    ]
)


def translate(data: bytes, size: int) -> tuple[list[dict[str, Any]], AnthropicStreamDecoder]:
    """The OpenAI chunks of an Anthropic stream cut every `size` bytes, as the upstream client reads it."""
    decoder, parser = AnthropicStreamDecoder(), SSEParser()
    payloads = [p for i in range(0, len(data), size) for p in parser.feed(data[i : i + size])] + parser.flush()
    return [e.json() for p in payloads for e in decoder.decode(p)], decoder


@pytest.mark.parametrize("size", [1, 7, 10_000])
def test_stream_events_become_chunks_whatever_the_network_splits(size: int) -> None:
    chunks, t = translate(STREAM, size)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""} and deltas[1] == {"content": "Hé"}
    assert deltas[2]["tool_calls"][0] == {
        "index": 0,
        "id": "t1",
        "type": "function",
        "function": {"name": "f", "arguments": ""},
    }
    assert "".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas[3:5]) == '{"a":1}'
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 9
    assert t.usage == {"prompt_tokens": 4, "completion_tokens": 9, "total_tokens": 13}


def test_stream_error_event_ends_the_stream_with_an_openai_error() -> None:
    data = (
        sse("message_start", message={"id": "m", "model": "c", "usage": {}})
        + sse("error", error={"type": "overloaded_error", "message": "Overloaded"})
        + sse("message_stop")
    )
    chunks, t = translate(data, 10_000)
    assert chunks[-1]["error"]["message"] == "Overloaded" and t.usage is None
