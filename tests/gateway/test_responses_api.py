"""OpenAI's Responses API served by IIR for a `local/` model (the simulated vLLM), through the official
`openai` SDK: plain, streamed, tools and their outputs, `previous_response_id`, stored responses per key.
(Moved from tests/integration/test_responses_api.py.)"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import SERVED
from tests.gateway.conftest import Fleet, Gateway, openai_sdk

MODEL = f"local/{SERVED}"
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


async def test_a_response(openai_client: openai.AsyncOpenAI) -> None:
    response = await openai_client.responses.create(
        model=MODEL, input="Hello there", instructions="Be terse.", max_output_tokens=10
    )
    assert response.object == "response" and response.id.startswith("resp_") and response.model == MODEL
    assert response.status in ("completed", "incomplete") and response.output_text
    assert response.output[0].type == "message" and response.output[0].content[0].type == "output_text"
    assert response.usage and response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    # OpenAI's schema requires the cache-write count beside the cached one.
    assert response.usage.input_tokens_details.model_dump()["cache_write_tokens"] == 0


async def test_max_output_tokens_makes_it_incomplete(openai_client: openai.AsyncOpenAI) -> None:
    response = await openai_client.responses.create(model=MODEL, input="Tell me everything", max_output_tokens=2)
    assert response.status == "incomplete" and response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"


async def test_a_streamed_response(openai_client: openai.AsyncOpenAI) -> None:
    whole = await openai_client.responses.create(model=MODEL, input="Stream to me", max_output_tokens=12)
    stream = await openai_client.responses.create(model=MODEL, input="Stream to me", max_output_tokens=12, stream=True)
    events: list[Any] = [e async for e in stream]
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        kinds[-1],
    ]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == whole.output_text == events[-1].response.output_text
    assert whole.usage is not None and events[-1].response.usage.output_tokens == whole.usage.output_tokens


async def test_include_asks_for_the_text_s_logprobs(openai_client: openai.AsyncOpenAI) -> None:
    asked: Any = {"model": MODEL, "input": "Hello there", "max_output_tokens": 6}
    plain = await openai_client.responses.create(**asked)
    assert plain.output[0].content[0].logprobs == []
    include: Any = ["message.output_text.logprobs"]
    whole = await openai_client.responses.create(**asked, include=include, top_logprobs=2)
    part: Any = whole.output[0].content[0]
    assert "".join(lp.token for lp in part.logprobs) == part.text
    assert all(lp.logprob <= 0 and lp.bytes and len(lp.top_logprobs) == 2 for lp in part.logprobs)
    events: list[Any] = [e async for e in await openai_client.responses.create(**asked, include=include, stream=True)]
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert deltas and all(len(e.logprobs) == 1 and e.logprobs[0].token == e.delta for e in deltas)
    done = next(e for e in events if e.type == "response.output_text.done")
    assert [lp.token for lp in done.logprobs] == [e.delta for e in deltas]
    final = events[-1].response.output[0].content[0].logprobs
    assert [lp.model_dump() for lp in final] == [lp.model_dump() for lp in done.logprobs]


async def test_tools_and_their_outputs(openai_client: openai.AsyncOpenAI) -> None:
    called = await openai_client.responses.create(model=MODEL, input="What is the weather in Paris?", tools=[WEATHER])
    call: Any = next(item for item in called.output if item.type == "function_call")
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    raw = await openai_client.responses.with_raw_response.create(model=MODEL, input="Weather?", tools=[WEATHER])
    echoed = json.loads(raw.http_response.text)["tools"][0]  # as OpenAI's schema has a function tool
    assert echoed["name"] == "get_weather" and echoed["strict"] is None and echoed["parameters"]
    # The agent loop: the call's output continues the stored conversation.
    answered = await openai_client.responses.create(
        model=MODEL,
        previous_response_id=called.id,
        tools=[WEATHER],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
    )
    assert answered.output_text and answered.previous_response_id == called.id


async def test_a_streamed_function_call(openai_client: openai.AsyncOpenAI) -> None:
    stream = await openai_client.responses.create(
        model=MODEL,
        input="Weather in Lyon?",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        stream=True,
    )
    events: list[Any] = [e async for e in stream]
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert json.loads(done.arguments) == {"city": "Lyon"} and done.model_dump()["name"] == "get_weather"
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert deltas == done.arguments


async def test_stored_responses_belong_to_their_key(
    fleet: Fleet, gateway: Gateway, openai_client: openai.AsyncOpenAI
) -> None:
    response = await openai_client.responses.create(model=MODEL, input="Remember me", max_output_tokens=5)
    assert (await openai_client.responses.retrieve(response.id)).output_text == response.output_text
    items = await openai_client.responses.input_items.list(response.id)
    assert [i.type for i in items.data] == ["message"]
    other_key = await fleet.create_key("other")
    async with openai_sdk(gateway, other_key) as other:
        with pytest.raises(openai.NotFoundError):
            await other.responses.retrieve(response.id)
        with pytest.raises(openai.BadRequestError):  # nor continue it
            await other.responses.create(model=MODEL, input="x", previous_response_id=response.id)
    await openai_client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        await openai_client.responses.retrieve(response.id)
    unstored = await openai_client.responses.create(model=MODEL, input="Forget me", store=False, max_output_tokens=5)
    with pytest.raises(openai.NotFoundError):
        await openai_client.responses.retrieve(unstored.id)


async def test_bad_requests_are_400s(http: httpx.AsyncClient, openai_client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as built_in:
        await openai_client.responses.create(model=MODEL, input="x", tools=[{"type": "web_search"}])
    assert "web_search" in built_in.value.message
    for body in (
        {"input": "no model"},
        {"model": MODEL, "input": 5},
        {"model": MODEL, "input": [{"role": "robot", "content": "x"}]},
        {"model": MODEL, "input": [{"type": "function_call_output", "call_id": "no_such_call", "output": "x"}]},
    ):
        resp = await http.post("/v1/responses", json=body)
        assert resp.status_code == 400 and resp.json()["error"]["message"], (body, resp.text)


async def test_the_open_responses_compliance_requests(openai_client: openai.AsyncOpenAI) -> None:
    """The requests of the Open Responses compliance suite (basic, system prompt, image, multi-turn):
    each completes with output, as its validators ask."""
    image = (
        "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQ"
        "AAAABJRU5ErkJggg=="
    )
    inputs: list[Any] = [
        [{"type": "message", "role": "user", "content": "Say hello in exactly 3 words."}],
        [
            {"type": "message", "role": "system", "content": "You are a pirate."},
            {"type": "message", "role": "user", "content": "Say hello."},
        ],
        [
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What do you see?"},
                    {"type": "input_image", "image_url": image},
                ],
            }
        ],
        [
            {"type": "message", "role": "user", "content": "My name is Alice."},
            {"type": "message", "role": "assistant", "content": "Hello Alice!"},
            {"type": "message", "role": "user", "content": "What is my name?"},
        ],
    ]
    for items in inputs:
        response = await openai_client.responses.create(model=MODEL, input=items)
        assert response.status == "completed" and response.output and response.completed_at, items


async def test_a_compacted_conversation_starts_a_new_chain(
    http: httpx.AsyncClient, openai_client: openai.AsyncOpenAI
) -> None:
    first = await openai_client.responses.create(
        model=MODEL, input="Remember the code word: slate.", max_output_tokens=5
    )
    compact = await http.post(
        "/v1/responses/compact",
        json={"model": MODEL, "previous_response_id": first.id, "input": [{"role": "user", "content": "And then?"}]},
    )
    assert compact.status_code == 200, compact.text
    resource = compact.json()  # Open Responses' CompactResource
    assert resource["object"] == "response.compaction" and resource["id"].startswith("resp_")
    assert isinstance(resource["created_at"], int) and resource["usage"]["input_tokens"] > 0
    [item] = resource["output"]
    assert item["type"] == "compaction" and item["id"].startswith("cmp_") and item["encrypted_content"]
    # The item starts a new chain without previous_response_id: the model sees the whole conversation.
    plain = await openai_client.responses.create(model=MODEL, input="What was it?", max_output_tokens=5)
    after: Any = [item, {"type": "message", "role": "user", "content": "What was it?"}]
    continued = await openai_client.responses.create(model=MODEL, input=after, max_output_tokens=5)
    assert continued.status == plain.status and continued.usage and plain.usage
    assert continued.usage.input_tokens > plain.usage.input_tokens


async def test_compaction_refuses_what_it_cannot_fold(http: httpx.AsyncClient) -> None:
    one = [{"role": "user", "content": "x"}]
    missing = await http.post("/v1/responses/compact", json={"input": one})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "model"
    unknown = await http.post("/v1/responses/compact", json={"model": "nowhere/model", "input": one})
    assert unknown.status_code == 404
    gone = await http.post("/v1/responses/compact", json={"model": MODEL, "previous_response_id": "resp_gone"})
    assert gone.status_code == 400 and gone.json()["error"]["code"] == "previous_response_not_found"
    forged = [{"type": "compaction", "id": "cmp_1", "encrypted_content": "bm90IG91cnM="}]
    refused = await http.post("/v1/responses", json={"model": MODEL, "input": forged})
    assert refused.status_code == 400 and "compaction" in refused.json()["error"]["message"]
