"""The Anthropic Messages API served by IIR for a `local/` model (the simulated vLLM), through the
official `anthropic` SDK: plain, streamed, tools with a tool_result turn, count_tokens, and errors in
Anthropic's shape with a `request-id` header. (Moved from tests/integration/test_anthropic_messages.py.)"""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import SERVED
from tests.gateway.conftest import Gateway, anthropic_sdk

MODEL = f"local/{SERVED}"
WEATHER_TOOL: Any = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


async def test_a_message(anthropic_client: anthropic.AsyncAnthropic) -> None:
    raw = await anthropic_client.messages.with_raw_response.create(
        model=MODEL,
        max_tokens=12,
        system=[{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "Hello"}],
    )
    assert raw.headers["request-id"] and raw.headers["x-iir-model"] == MODEL
    message = await raw.parse()
    assert message.type == "message" and message.role == "assistant" and message.model == MODEL
    assert message.id.startswith("msg_") and message.content[0].type == "text" and message.content[0].text
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0


async def test_a_streamed_message_equals_the_whole_one(anthropic_client: anthropic.AsyncAnthropic) -> None:
    kwargs: Any = {"model": MODEL, "max_tokens": 12, "messages": [{"role": "user", "content": "Tell me more"}]}
    whole = await anthropic_client.messages.create(**kwargs)
    async with anthropic_client.messages.stream(**kwargs) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text == whole.content[0].text
    assert final.stop_reason == whole.stop_reason and final.usage.output_tokens == whole.usage.output_tokens


async def test_stream_events_are_anthropics(gateway: Gateway, api_key: str) -> None:
    resp = await gateway.client.post(
        "/v1/messages",
        headers={"x-api-key": api_key, "anthropic-version": "2023-06-01"},
        json={"model": MODEL, "max_tokens": 5, "stream": True, "messages": [{"role": "user", "content": "hi"}]},
    )
    names = [line[7:] for line in resp.text.splitlines() if line.startswith("event: ")]
    assert names[0] == "message_start" and names[1] == "content_block_start"
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[2:-3]) == {"content_block_delta"}


async def test_tools_then_the_tool_result(anthropic_client: anthropic.AsyncAnthropic) -> None:
    asked: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
    called = await anthropic_client.messages.create(model=MODEL, max_tokens=60, tools=[WEATHER_TOOL], messages=asked)
    assert called.stop_reason == "tool_use"
    use = next(b for b in called.content if b.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"city": "Paris"}
    answered = await anthropic_client.messages.create(
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


async def test_a_streamed_tool_use(anthropic_client: anthropic.AsyncAnthropic) -> None:
    async with anthropic_client.messages.stream(
        model=MODEL,
        max_tokens=60,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "Weather in Lyon?"}],
    ) as stream:
        final = await stream.get_final_message()
    use = next(b for b in final.content if b.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"city": "Lyon"}
    # vLLM finishes a forced call with `stop`; Anthropic says `tool_use`, and agent loops branch on it.
    assert final.stop_reason == "tool_use" and use.id.startswith("toolu_")
    whole = await anthropic_client.messages.create(
        model=MODEL,
        max_tokens=60,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "Weather in Lyon?"}],
    )
    assert whole.stop_reason == "tool_use"
    assert all(b.id.startswith("toolu_") for b in whole.content if b.type == "tool_use")


async def test_count_tokens(anthropic_client: anthropic.AsyncAnthropic) -> None:
    messages: Any = [{"role": "user", "content": "Hello there"}]
    counted = await anthropic_client.messages.count_tokens(model=MODEL, messages=messages)
    assert counted.input_tokens > 0
    # A local model's replica counts them (vLLM's /tokenize): the count the answer then reports, tools too.
    system, tools = "You are terse.", [WEATHER_TOOL]
    for extra in ({}, {"system": system}, {"system": system, "tools": tools}):
        counted = await anthropic_client.messages.count_tokens(model=MODEL, messages=messages, **extra)
        answer = await anthropic_client.messages.create(model=MODEL, max_tokens=5, messages=messages, **extra)
        usage = answer.usage
        billed = usage.input_tokens + (usage.cache_read_input_tokens or 0) + (usage.cache_creation_input_tokens or 0)
        assert counted.input_tokens == billed, extra
    with pytest.raises(anthropic.NotFoundError) as unknown:  # as Anthropic answers for a model it has not
        await anthropic_client.messages.count_tokens(model="local/no-such-model", messages=messages)
    assert unknown.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


async def test_errors_have_anthropics_shape(gateway: Gateway, anthropic_client: anthropic.AsyncAnthropic) -> None:
    one: Any = [{"role": "user", "content": "x"}]
    async with anthropic_sdk(gateway, "wrong") as wrong:
        with pytest.raises(anthropic.AuthenticationError) as unauthorized:
            await wrong.messages.create(model=MODEL, max_tokens=5, messages=one)
    assert unauthorized.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert unauthorized.value.response.headers["request-id"]
    with pytest.raises(anthropic.NotFoundError) as not_found:
        await anthropic_client.messages.create(model="local/nope", max_tokens=5, messages=one)
    assert not_found.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    assert not_found.value.response.headers["request-id"]
    client = gateway.client
    missing = await client.post(  # the SDK refuses to send it; curl does not
        "/v1/messages", headers={"x-api-key": str(anthropic_client.api_key)}, json={"model": MODEL, "messages": one}
    )
    assert missing.status_code == 400 and missing.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in missing.json()["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as server_tool:
        await anthropic_client.messages.create(
            model=MODEL, max_tokens=5, tools=[{"type": "web_search_20250305", "name": "web_search"}], messages=one
        )
    assert "web_search_20250305" in server_tool.value.message
    bad = await client.post("/v1/messages", headers={"x-api-key": "k"}, content=b"{not json")
    assert bad.json()["type"] == "error" and bad.status_code in (400, 401)
    too_big = await client.post("/v1/messages", content=b"x" * 70_000)  # the limit: 64 KiB
    assert too_big.status_code == 413 and too_big.json()["error"]["type"] == "request_too_large"


async def test_an_external_anthropic_models_errors_keep_anthropics_shape(http: httpx.AsyncClient) -> None:
    body = {"model": "anthropic/claude-overloaded", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    resp = await http.post("/v1/messages", json=body)  # the fake answers 529, every retry
    assert resp.status_code == 502 and resp.headers["request-id"]
    data = resp.json()
    assert data["type"] == "error" and data["error"]["type"] == "api_error" and "529" in data["error"]["message"]


async def test_a_claude_code_shaped_session(anthropic_client: anthropic.AsyncAnthropic) -> None:
    """A large system prompt in blocks (cache_control on), many tools, streamed turns, and tool_use →
    tool_result round trips, as Claude Code drives a session."""
    system: Any = [
        {"type": "text", "text": "You are an agent for software engineering. " * 200},
        {"type": "text", "text": "Use the tools.", "cache_control": {"type": "ephemeral"}},
    ]
    tools: Any = [
        {
            "name": f"tool_{i}",
            "description": f"Tool number {i}",
            "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
        }
        for i in range(30)
    ]
    messages: list[Any] = [{"role": "user", "content": [{"type": "text", "text": "Read the file Main"}]}]
    for _turn in range(3):
        async with anthropic_client.messages.stream(
            model=MODEL, max_tokens=200, system=system, tools=tools, messages=messages
        ) as stream:
            reply = await stream.get_final_message()
        messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in reply.content]})
        uses = [b for b in reply.content if b.type == "tool_use"]
        if not uses:
            break
        assert reply.stop_reason == "tool_use" and uses[0].name == "tool_0" and uses[0].input == {"path": "Main"}
        messages.append(
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": u.id, "content": "file contents"} for u in uses],
            }
        )
    assert messages[-1]["role"] == "assistant" and messages[-1]["content"][0]["type"] == "text"  # it answered
