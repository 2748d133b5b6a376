"""The Responses API over chat: requests translated, and a chat stream as the Responses stream."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from iir_gateway.answer import Answer, Event
from iir_gateway.errors import APIError
from iir_gateway.inbound.responses import RESPONSES, ResponsesExchange
from iir_gateway.inbound.responses_answer import output_items
from iir_gateway.inbound.responses_request import chat_request
from iir_gateway.inbound.responses_stream import ResponsesStreamEncoder


def test_a_request_after_a_conversation() -> None:
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    body = {
        "model": "local/m",
        "instructions": "Be brief.",
        "input": [
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "1"},
            {"role": "developer", "content": [{"type": "input_text", "text": "Note"}]},
        ],
        "max_output_tokens": 9,
        "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}, "strict": True}},
        "reasoning": {"effort": "low"},
    }
    out = chat_request(body, history)
    assert out["messages"][0] == {"role": "system", "content": "Be brief."} and out["messages"][1:3] == history
    assert [c["id"] for c in out["messages"][3]["tool_calls"]] == ["c1", "c2"]  # parallel calls: one turn
    assert out["messages"][4] == {"role": "tool", "tool_call_id": "c1", "content": "1"}
    assert out["messages"][5] == {"role": "system", "content": "Note"}
    assert out["max_tokens"] == 9 and out["reasoning_effort"] == "low"
    assert out["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": True},
    }


@pytest.mark.parametrize("tool", [{"type": "web_search"}, {"type": "file_search"}, {"type": "mcp"}, {"type": "custom"}])
def test_tools_it_cannot_run_are_a_400(tool: dict[str, Any]) -> None:
    with pytest.raises(APIError) as refused:
        chat_request({"model": "m", "input": "x", "tools": [tool]}, [])
    assert refused.value.status == 400 and tool["type"] in refused.value.message


def test_a_stream_with_reasoning_text_and_a_call() -> None:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    encoder = ResponsesStreamEncoder("resp_1", {"model": "m"}, "m")
    events = list(encoder.start())
    for c in (
        chunk({"reasoning_content": "think"}),
        chunk({"content": "Hi"}),
        chunk({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": '{"a":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}, "tool_calls"),
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}},
    ):
        events += list(encoder.feed(c))
    events += list(encoder.end())
    kinds = [k for k, _ in events]
    assert kinds[2:5] == ["response.output_item.added", "response.reasoning_text.delta", "response.reasoning_text.done"]
    assert "response.output_text.delta" in kinds and "response.function_call_arguments.done" in kinds
    assert [e["sequence_number"] for _, e in events] == list(range(len(events)))
    final = encoder.final
    assert final is not None and [i["type"] for i in final["output"]] == ["reasoning", "message", "function_call"]
    assert final["output"][2]["arguments"] == '{"a":1}' and final["usage"]["total_tokens"] == 7
    whole = {
        "choices": [
            {
                "message": {
                    "content": "Hi",
                    "reasoning_content": "think",
                    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": '{"a":1}'}}],
                }
            }
        ]
    }
    assert [i["type"] for i in output_items(whole)] == ["reasoning", "message", "function_call"]  # the same, whole


def _kinds(raw: bytes) -> list[str]:
    return [b.split(b"\n")[0].removeprefix(b"event: ").decode() for b in raw.split(b"\n\n") if b]


class _Kept:
    def __init__(self) -> None:
        self.kept: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []

    async def __call__(self, response: dict[str, Any], history: list[dict[str, Any]]) -> None:
        self.kept.append((response, history))


def test_a_bad_body_is_a_400_in_openai_s_shape() -> None:
    with pytest.raises(APIError) as refused:
        RESPONSES.exchange({}).request({"model": "m", "input": "x", "max_output_tokens": 0})
    assert refused.value.param == "max_output_tokens"
    response = RESPONSES.error(refused.value)
    assert response.status_code == 400 and orjson.loads(response.body)["error"]["param"] == "max_output_tokens"


def test_a_document_is_a_response_kept_with_the_conversation_after_it() -> None:
    kept = _Kept()
    history = [{"role": "user", "content": "Before"}, {"role": "assistant", "content": "Yes"}]
    exchange = ResponsesExchange(history, kept, {"email"})
    chat = exchange.request({"model": "local/m", "instructions": "Be brief.", "input": "Hi"})
    assert chat["messages"][0]["role"] == "system" and chat["messages"][-1] == {"role": "user", "content": "Hi"}
    completion = {"choices": [{"message": {"content": "Hello"}, "finish_reason": "stop"}], "usage": {}}
    answer = Answer("local/m", document=Event.of(completion), headers={"x-iir-scrubbed": "aws_key"})
    response = orjson.loads(asyncio.run(exchange.document(answer)))
    assert response["id"] == exchange.id and response["status"] == "completed"
    assert response["output"][0]["content"][0]["text"] == "Hello"
    ((stored, after),) = kept.kept
    assert stored == response
    assert after == [*history, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    assert exchange.headers(answer)["x-iir-scrubbed"] == "aws_key,email"  # the route's and the pipeline's


def test_a_stream_is_kept_when_whole_and_fails_on_an_error_event() -> None:
    kept = _Kept()
    exchange = ResponsesExchange(None, kept)
    exchange.request({"model": "local/m", "input": "Hi", "stream": True})
    frames = exchange.stream(Answer("local/m"))
    chunk = {"choices": [{"index": 0, "delta": {"content": "Yo"}, "finish_reason": "stop"}]}
    body = frames.head() + frames.feed(Event.of(chunk), []) + asyncio.run(frames.tail(True))
    assert _kinds(body)[:2] == ["response.created", "response.in_progress"]
    assert _kinds(body)[-1] == "response.completed" and len(kept.kept) == 1

    failing = exchange.stream(Answer("local/m"))
    body = failing.feed(Event.of({"error": {"message": "gone", "code": "upstream_error"}}), [])
    body += asyncio.run(failing.tail(False))
    assert _kinds(body) == ["response.failed"] and len(kept.kept) == 1  # a failed response is not kept
    assert asyncio.run(exchange.stream(Answer("m")).tail(False)) == b""  # broken off, no error: nothing
