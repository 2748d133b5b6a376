"""Each wire codec on golden pairs: the request it sends for an OpenAI request, and the OpenAI answer
and stream it makes of what its upstream answers. Plus the relay that reads streams through them."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, cast

import orjson
import pytest

from iir_gateway.answer import Event
from iir_gateway.metrics import GatewayMetrics
from iir_gateway.upstream.errors import upstream_error
from iir_gateway.upstream.http11 import Response, UpstreamProtocolError
from iir_gateway.upstream.relay import StreamRelay
from iir_gateway.wire.registry import CODECS, codec_for
from iir_gateway.wire.sse import SSEParser

CHAT = {
    "model": "openai/gpt-4o",
    "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
    "max_tokens": 5,
    "stream": True,
}


def test_codecs_are_registered_by_kind() -> None:
    assert set(CODECS) == {"openai", "anthropic", "vertex-anthropic", "gemini", "bedrock"}
    assert codec_for("anthropic").kind == "anthropic"


def test_openai_request_names_the_upstream_model_and_asks_for_stream_usage_without_changing_the_body() -> None:
    body = {**CHAT, "stream_options": {"include_usage": False, "continuous_usage_stats": True}}
    before = orjson.dumps(body)
    path, payload = codec_for("openai").encode_request("chat/completions", body, "gpt-4o-2024", True)
    sent = orjson.loads(payload)
    assert path == "chat/completions" and sent["model"] == "gpt-4o-2024"
    assert sent["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}
    assert orjson.dumps(body) == before
    _, unary = codec_for("openai").encode_request("embeddings", {"model": "x", "input": "a"}, "e5", False)
    assert orjson.loads(unary) == {"model": "e5", "input": "a"}


def test_openai_answers_pass_as_the_bytes_that_came() -> None:
    raw = b'{"id":"c","choices":[],"usage":{"prompt_tokens":1}}'
    answer = codec_for("openai").decode_response(raw)
    assert answer is not None and answer.raw is raw
    assert codec_for("openai").decode_response(b"[1,2]") is None
    decoder = codec_for("openai").stream_decoder()
    events = decoder.decode(b'{"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":3}}')
    assert events[0].raw.startswith(b'{"choices"') and decoder.usage == {"prompt_tokens": 2, "completion_tokens": 3}
    assert decoder.decode(b"[DONE]") == [] and decoder.done


def test_anthropic_request_and_answer_golden_pair() -> None:
    path, payload = codec_for("anthropic").encode_request("chat/completions", CHAT, "claude-x", True)
    assert path == "v1/messages"
    assert orjson.loads(payload) == {
        "model": "claude-x",
        "system": "be brief",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "max_tokens": 5,
        "stream": True,
    }
    answer = codec_for("anthropic").decode_response(
        orjson.dumps(
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "claude-x",
                "content": [{"type": "text", "text": "Hello"}],
                "stop_reason": "max_tokens",
                "usage": {"input_tokens": 4, "output_tokens": 5},
            }
        )
    )
    assert answer is not None
    data = answer.json()
    assert data["choices"][0]["message"] == {"role": "assistant", "content": "Hello", "refusal": None}
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"] == {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9}


def test_anthropic_refuses_endpoints_it_has_not() -> None:
    with pytest.raises(Exception) as err:
        codec_for("anthropic").encode_request("embeddings", {"model": "anthropic/c", "input": "x"}, "c", False)
    assert getattr(err.value, "code", "") == "unsupported_endpoint"


def test_sse_parser_joins_what_the_network_cut_and_drops_event_names() -> None:
    parser = SSEParser()
    data = b'event: message_start\r\ndata: {"a":1}\r\n\r\n: ping\n\ndata: {"b":\ndata: 2}\n\ndata: [DONE]'
    out = [p for i in range(len(data)) for p in parser.feed(data[i : i + 1])] + parser.flush()
    assert out == [b'{"a":1}', b'{"b":\n2}', b"[DONE]"]


class FakeResponse:
    """An upstream answer (`iir_gateway.upstream.http11.Response`) read from a script."""

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.released = self.closed = False
        self.failure: BaseException | None = None
        self.failed = asyncio.Event()

    async def readany(self) -> bytes:
        item = self.script.pop(0) if self.script else b""
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, float):  # a stall: nothing comes for that long, unless the reader gives up
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.failed.wait(), item)
            if self.failure is not None:
                raise self.failure
            return b""
        return item

    def fail(self, exc: BaseException) -> None:
        self.failure, self.closed = exc, True
        self.failed.set()

    def release(self) -> None:
        self.released = True

    def close(self) -> None:
        self.closed = True


def relay(first: bytes, script: list[Any], kind: str = "openai", read_timeout_s: float = 1.0) -> tuple[Any, Any]:
    resp = FakeResponse(script)
    stream = StreamRelay(
        cast(Response, resp),  # the relay reads, releases and closes it: all the fake does
        first,
        codec_for(kind).stream_decoder(),
        read_timeout_s,
        "p",
        "p/m",
        "p/m",
        GatewayMetrics(),
    )
    return stream, resp


async def read_all(stream: Any) -> list[Event]:
    out = [e async for e in stream]
    await stream.aclose()
    return out


def chunk(text: str) -> bytes:
    return b'data: {"choices":[{"index":0,"delta":{"content":"' + text.encode() + b'"}}]}\n\n'


def test_a_whole_stream_keeps_its_connection_and_reports_its_usage() -> None:
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}\n\ndata: [DONE]\n\n'
    stream, resp = relay(chunk("a"), [chunk("b")[:9], chunk("b")[9:] + usage])
    events = asyncio.run(read_all(stream))
    assert len(events) == 3 and stream.completed and resp.released and not resp.closed
    assert stream.usage == {"prompt_tokens": 1, "completion_tokens": 2}


@pytest.mark.parametrize("fault", [UpstreamProtocolError("cut"), 5.0])
def test_a_broken_or_stalled_stream_ends_with_an_error_event_and_counts_what_was_generated(fault: Any) -> None:
    stream, resp = relay(chunk("a"), [chunk("b"), fault], read_timeout_s=0.05)
    events = asyncio.run(read_all(stream))
    error = events[-1].json()["error"]
    assert error["code"] in ("upstream_error", "upstream_timeout") and not stream.completed
    assert stream.usage == {"completion_tokens": 2} and resp.closed  # the connection is dropped: vLLM aborts


def test_a_reader_slower_than_the_stall_timeout_is_not_an_upstream_stall() -> None:
    # The timeout counts only time spent waiting on the upstream, not time the client took to read.
    stream, resp = relay(chunk("a"), [chunk("b"), chunk("c")], read_timeout_s=0.05)

    async def slow_reader() -> list[Event]:
        out = []
        async for event in stream:
            out.append(event)
            await asyncio.sleep(0.2)  # the client reading slowly: the scenario itself, not a wait
        await stream.aclose()
        return out

    events = asyncio.run(slow_reader())
    assert len(events) == 3 and stream.completed and resp.released and not resp.closed


def test_closing_early_drops_the_connection() -> None:
    stream, resp = relay(chunk("a"), [chunk("b")])

    async def go() -> None:
        async for _ in stream:
            break
        await stream.aclose()

    asyncio.run(go())
    assert resp.closed and not resp.released and stream.usage == {"completion_tokens": 1}


def test_anthropic_stream_through_the_relay() -> None:
    def sse(kind: str, **data: Any) -> bytes:
        return f"event: {kind}\ndata: ".encode() + orjson.dumps({"type": kind, **data}) + b"\n\n"

    body = (
        sse("message_start", message={"id": "m1", "model": "c", "usage": {"input_tokens": 3}})
        + sse("content_block_delta", index=0, delta={"type": "text_delta", "text": "Hi"})
        + sse("message_delta", delta={"stop_reason": "end_turn"}, usage={"output_tokens": 1})
        + sse("message_stop")
    )
    stream, _ = relay(body[:20], [body[20:]], kind="anthropic")
    events = [e.json() for e in asyncio.run(read_all(stream))]
    assert [e["choices"][0]["delta"] for e in events[:2]] == [{"role": "assistant", "content": ""}, {"content": "Hi"}]
    assert events[2]["choices"][0]["finish_reason"] == "stop" and events[3]["choices"] == []
    assert stream.usage == {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (  # vLLM: its fields kept, but the HTTP status it repeats in `code`
            b'{"error":{"message":"max_tokens=9 too big","type":"BadRequestError","param":"max_tokens","code":400}}',
            {
                "message": "max_tokens=9 too big",
                "type": "BadRequestError",
                "param": "max_tokens",
                "code": "upstream_rejected",
            },
        ),
        (  # OpenAI: exactly as sent
            b'{"error":{"message":"too long","type":"invalid_request_error","param":"messages",'
            b'"code":"context_length_exceeded"}}',
            {
                "message": "too long",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            },
        ),
        (  # FastAPI's default 404 (vLLM for a route its model lacks)
            b'{"detail":"Not Found"}',
            {
                "message": "The upstream for `local/m` answered 404: Not Found.",
                "type": None,
                "param": None,
                "code": "upstream_rejected",
            },
        ),
        (
            b"no such thing",
            {
                "message": "The upstream for `local/m` answered 404: no such thing.",
                "type": None,
                "param": None,
                "code": "upstream_rejected",
            },
        ),
    ],
)
def test_an_upstream_error_object_is_kept(raw: bytes, expected: dict[str, Any]) -> None:
    assert upstream_error(raw, 404, "local/m") == expected
