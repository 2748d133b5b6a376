"""The Responses API over chat: requests translated, and a chat stream as the Responses stream."""

from __future__ import annotations

import pytest

from iir_gateway.errors import APIError
from iir_gateway.wire.openai_responses import ResponsesStreamEncoder, chat_request, output_items


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
def test_tools_it_cannot_run_are_a_400(tool: dict) -> None:
    with pytest.raises(APIError) as refused:
        chat_request({"model": "m", "input": "x", "tools": [tool]}, [])
    assert refused.value.status == 400 and tool["type"] in refused.value.message


def test_a_stream_with_reasoning_text_and_a_call() -> None:
    def chunk(delta: dict, finish: str | None = None) -> dict:
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
