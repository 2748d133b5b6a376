"""The enterprise providers' codecs on golden pairs: Claude on Vertex (Anthropic's body without `model`),
Gemini's generateContent and Bedrock's Converse both ways, and their streams read through the relay with
each codec's own framing (SSE, AWS's event stream)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import orjson

from iir_gateway.answer import Event
from iir_gateway.metrics import GatewayMetrics
from iir_gateway.upstream.http11 import Response
from iir_gateway.upstream.relay import StreamRelay
from iir_gateway.wire.registry import codec_for
from tests.fakes.bedrock_runtime import event
from tests.unit.test_wire_codecs import FakeResponse

CHAT: dict[str, Any] = {
    "model": "p/m",
    "messages": [
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "hi"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
    ],
    "max_tokens": 5,
    "temperature": 0.3,
    "stop": "END",
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "f",
                "parameters": {
                    "type": "object",
                    "properties": {"a": {"type": "integer"}},
                    "additionalProperties": False,
                },
            },
        }
    ],
    "tool_choice": {"type": "function", "function": {"name": "f"}},
}


def read(kind: str, chunks: list[bytes]) -> tuple[list[dict[str, Any]], Any]:
    codec = codec_for(kind)
    stream = StreamRelay(
        cast(Response, FakeResponse(chunks[1:])),
        chunks[0],
        codec.stream_decoder(),
        1.0,
        "p",
        "p/m",
        "p/m",
        GatewayMetrics(),
        codec.framing(),
    )

    async def drain() -> list[Event]:
        out = [e async for e in stream]
        await stream.aclose()
        return out

    return [e.json() for e in asyncio.run(drain())], stream.usage


def test_claude_on_vertex_sends_anthropics_body_without_the_model() -> None:
    path, payload = codec_for("vertex-anthropic").encode_request("chat/completions", CHAT, "claude-x@2025", True)
    sent = orjson.loads(payload)
    assert path == "claude-x@2025:streamRawPredict" and "model" not in sent
    assert sent["anthropic_version"] == "vertex-2023-10-16" and sent["stream"] is True and sent["system"] == "be brief"
    path, _ = codec_for("vertex-anthropic").encode_request("chat/completions", CHAT, "claude-x@2025", False)
    assert path == "claude-x@2025:rawPredict"


def test_gemini_request_golden() -> None:
    path, payload = codec_for("gemini").encode_request("chat/completions", CHAT, "gemini-2.5-pro", True)
    assert path == "gemini-2.5-pro:streamGenerateContent?alt=sse"
    assert orjson.loads(payload) == {
        "systemInstruction": {"parts": [{"text": "be brief"}]},
        "contents": [
            {"role": "user", "parts": [{"text": "hi"}, {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}]},
            {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"a": 1}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"content": "ok"}}}]},
        ],
        "generationConfig": {"temperature": 0.3, "maxOutputTokens": 5, "stopSequences": ["END"]},
        "tools": [
            {
                "functionDeclarations": [
                    {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}
                ]
            }
        ],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}},
    }


def test_gemini_answer_and_stream() -> None:
    raw = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "thinking", "thought": True},
                        {"text": "Hi"},
                        {"functionCall": {"name": "f", "args": {"a": 1}}},
                    ],
                },
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 3,
            "candidatesTokenCount": 4,
            "thoughtsTokenCount": 2,
            "cachedContentTokenCount": 1,
        },
        "modelVersion": "gemini-2.5-pro",
        "responseId": "r1",
    }
    answer = codec_for("gemini").decode_response(orjson.dumps(raw))
    assert answer is not None
    choice = answer.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] == "Hi"
    assert choice["message"]["reasoning_content"] == "thinking"
    assert choice["message"]["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"a":1}'}
    assert answer.json()["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 6,
        "total_tokens": 9,
        "prompt_tokens_details": {"cached_tokens": 1},
        "completion_tokens_details": {"reasoning_tokens": 2},
    }
    first = {"candidates": [{"content": {"parts": [{"text": "He"}]}}], "modelVersion": "g"}
    last = {
        "candidates": [{"content": {"parts": [{"text": "llo"}]}, "finishReason": "MAX_TOKENS"}],
        "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 2},
    }
    sse = b"data: " + orjson.dumps(first) + b"\r\n\r\ndata: " + orjson.dumps(last) + b"\r\n\r\n"
    events, usage = read("gemini", [sse[:20], sse[20:]])
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"]) == "Hello"
    assert [e["choices"][0]["finish_reason"] for e in events if e["choices"] and e["choices"][0]["finish_reason"]] == [
        "length"
    ]
    assert usage == {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}


def test_bedrock_request_golden() -> None:
    path, payload = codec_for("bedrock").encode_request("chat/completions", CHAT, "anthropic.claude-v2:1", True)
    assert path == "model/anthropic.claude-v2%3A1/converse-stream"
    assert orjson.loads(payload) == {
        "system": [{"text": "be brief"}],
        "messages": [
            {"role": "user", "content": [{"text": "hi"}, {"image": {"format": "png", "source": {"bytes": "AAAA"}}}]},
            {"role": "assistant", "content": [{"toolUse": {"toolUseId": "c1", "name": "f", "input": {"a": 1}}}]},
            {
                "role": "user",
                "content": [{"toolResult": {"toolUseId": "c1", "content": [{"text": "ok"}], "status": "success"}}],
            },
        ],
        "inferenceConfig": {"maxTokens": 5, "temperature": 0.3, "stopSequences": ["END"]},
        "toolConfig": {
            "tools": [{"toolSpec": {"name": "f", "inputSchema": {"json": CHAT["tools"][0]["function"]["parameters"]}}}],
            "toolChoice": {"tool": {"name": "f"}},
        },
    }


def test_bedrock_answer_and_event_stream() -> None:
    raw = {
        "output": {
            "message": {
                "role": "assistant",
                "content": [{"text": "Hi"}, {"toolUse": {"toolUseId": "t", "name": "f", "input": {}}}],
            }
        },
        "stopReason": "tool_use",
        "usage": {"inputTokens": 3, "outputTokens": 2, "cacheReadInputTokens": 1, "cacheWriteInputTokens": 1},
    }
    answer = codec_for("bedrock").decode_response(orjson.dumps(raw))
    assert answer is not None
    assert answer.json()["choices"][0]["finish_reason"] == "tool_calls"
    assert answer.json()["usage"]["prompt_tokens"] == 5 and answer.json()["usage"]["prompt_tokens_details"] == {
        "cached_tokens": 1
    }
    stream = b"".join(
        [
            event("messageStart", {"role": "assistant"}),
            event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "He"}}),
            event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "llo"}}),
            event("contentBlockStop", {"contentBlockIndex": 0}),
            event("contentBlockStart", {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t", "name": "f"}}}),
            event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"a":'}}}),
            event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": "1}"}}}),
            event("messageStop", {"stopReason": "tool_use"}),
            event("metadata", {"usage": {"inputTokens": 4, "outputTokens": 3}}),
        ]
    )
    events, usage = read("bedrock", [stream[i : i + 50] for i in range(0, len(stream), 50)])
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    assert "".join(d.get("content") or "" for d in deltas) == "Hello"
    calls = [c for d in deltas for c in d.get("tool_calls", [])]
    assert calls[0]["id"] == "t" and "".join(c["function"]["arguments"] for c in calls) == '{"a":1}'
    assert usage == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
