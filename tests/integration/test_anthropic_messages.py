"""The Anthropic Messages API served by IIR for a `local/` model (the simulated vLLM), through the
official `anthropic` SDK: plain, streamed, tools with a tool_result turn, count_tokens, and errors in
Anthropic's shape."""

from __future__ import annotations

from typing import cast

import anthropic
import httpx
import pytest
from anthropic.types import ContentBlockParam, MessageParam, TextBlock, TextBlockParam, ToolParam, ToolUseBlock

from iir_dev.stack import Stack
from tests.conftest import SERVED

MODEL = f"local/{SERVED}"
WEATHER_TOOL: ToolParam = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(scope="module")
def client(stack: Stack, api_key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.gateway_url, api_key=api_key, max_retries=0, timeout=20)


def test_a_message(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=MODEL,
        max_tokens=12,
        system=[{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "Hello"}],
    )
    assert message.type == "message" and message.role == "assistant" and message.model == MODEL
    assert message.id.startswith("msg_") and message.content[0].type == "text" and message.content[0].text
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0


def test_a_streamed_message_equals_the_whole_one(client: anthropic.Anthropic) -> None:
    messages: list[MessageParam] = [{"role": "user", "content": "Tell me more"}]
    whole = client.messages.create(model=MODEL, max_tokens=12, messages=messages)
    with client.messages.stream(model=MODEL, max_tokens=12, messages=messages) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert isinstance(whole.content[0], TextBlock) and text == whole.content[0].text
    assert final.stop_reason == whole.stop_reason and final.usage.output_tokens == whole.usage.output_tokens


def test_stream_events_are_anthropics(stack: Stack, api_key: str) -> None:
    with httpx.stream(
        "POST",
        f"{stack.gateway_url}/v1/messages",
        headers={"x-api-key": api_key, "anthropic-version": "2023-06-01"},
        json={"model": MODEL, "max_tokens": 5, "stream": True, "messages": [{"role": "user", "content": "hi"}]},
    ) as resp:
        names = [line[7:] for line in resp.iter_lines() if line.startswith("event: ")]
    assert names[0] == "message_start" and names[1] == "content_block_start"
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[2:-3]) == {"content_block_delta"}


def test_tools_then_the_tool_result(client: anthropic.Anthropic) -> None:
    asked: list[MessageParam] = [{"role": "user", "content": "What is the weather in Paris?"}]
    called = client.messages.create(model=MODEL, max_tokens=60, tools=[WEATHER_TOOL], messages=asked)
    assert called.stop_reason == "tool_use"
    use = next(b for b in called.content if b.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"city": "Paris"}
    answered = client.messages.create(
        model=MODEL,
        max_tokens=20,
        tools=[WEATHER_TOOL],
        messages=[
            *asked,
            {"role": "assistant", "content": called.content},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]},
        ],
    )
    assert answered.stop_reason in ("end_turn", "max_tokens") and answered.content[0].type == "text"


def test_a_streamed_tool_use(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model=MODEL,
        max_tokens=60,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "Weather in Lyon?"}],
    ) as stream:
        final = stream.get_final_message()
    use = next(b for b in final.content if b.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"city": "Lyon"}


def test_count_tokens(client: anthropic.Anthropic) -> None:
    counted = client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "Hello there"}])
    assert counted.input_tokens > 0


def test_errors_have_anthropics_shape(stack: Stack, client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.AuthenticationError) as unauthorized:
        anthropic.Anthropic(base_url=stack.gateway_url, api_key="wrong", max_retries=0).messages.create(
            model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    body = unauthorized.value.body
    assert isinstance(body, dict) and body["error"]["type"] == "authentication_error"
    assert unauthorized.value.response.headers["request-id"]
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="local/nope", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    missing = httpx.post(  # the SDK refuses to send it; curl does not
        f"{stack.gateway_url}/v1/messages",
        headers={"x-api-key": str(client.api_key)},
        json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]},
    )
    assert missing.status_code == 400 and missing.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in missing.json()["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as server_tool:
        client.messages.create(
            model=MODEL,
            max_tokens=5,
            tools=[{"type": "web_search_20250305", "name": "web_search"}],
            messages=[{"role": "user", "content": "x"}],
        )
    assert "web_search_20250305" in server_tool.value.message
    bad = httpx.post(f"{stack.gateway_url}/v1/messages", headers={"x-api-key": "k"}, content=b"{not json")
    assert bad.json()["type"] == "error" and bad.status_code in (400, 401)
    too_big = httpx.post(f"{stack.gateway_url}/v1/messages", content=b"x" * 70_000)  # IIR_MAX_BODY_BYTES: 64 KiB
    assert too_big.status_code == 413 and too_big.json()["error"]["type"] == "request_too_large"


def test_a_claude_code_shaped_session(client: anthropic.Anthropic) -> None:
    """A large system prompt in blocks (cache_control on), many tools, streamed turns, and tool_use →
    tool_result round trips, as Claude Code drives a session."""
    system: list[TextBlockParam] = [
        {"type": "text", "text": "You are an agent for software engineering. " * 200},
        {"type": "text", "text": "Use the tools.", "cache_control": {"type": "ephemeral"}},
    ]
    tools: list[ToolParam] = [
        {
            "name": f"tool_{i}",
            "description": f"Tool number {i}",
            "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
        }
        for i in range(30)
    ]
    messages: list[MessageParam] = [{"role": "user", "content": [{"type": "text", "text": "Read the file Main"}]}]
    for _turn in range(3):
        with client.messages.stream(
            model=MODEL, max_tokens=200, system=system, tools=tools, messages=messages
        ) as stream:
            reply = stream.get_final_message()
        # The blocks sent back as they came, as a client keeping the conversation does.
        echoed = [cast(ContentBlockParam, b.model_dump(exclude_none=True)) for b in reply.content]
        messages.append({"role": "assistant", "content": echoed})
        uses = [b for b in reply.content if isinstance(b, ToolUseBlock)]
        if not uses:
            break
        assert reply.stop_reason == "tool_use" and uses[0].name == "tool_0" and uses[0].input == {"path": "Main"}
        messages.append(
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": u.id, "content": "file contents"} for u in uses],
            }
        )
    assert messages[-1]["role"] == "assistant" and reply.content[0].type == "text"  # it answered
