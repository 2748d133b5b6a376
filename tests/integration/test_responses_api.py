"""OpenAI's Responses API served by IIR for a `local/` model (the simulated vLLM), through the official
`openai` SDK: plain, streamed, tools and their outputs, `previous_response_id`, stored responses per key."""

from __future__ import annotations

import json
from typing import cast

import httpx
import openai
import pytest
from openai.types.responses import (
    EasyInputMessageParam,
    FunctionToolParam,
    ResponseCompletedEvent,
    ResponseIncompleteEvent,
    ResponseInputParam,
    ResponseTextDeltaEvent,
)

from iir_dev.stack import Stack
from tests.conftest import SERVED

MODEL = f"local/{SERVED}"
WEATHER: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": None,  # unset: the gateway passes no strictness on
}


def test_a_response(openai_client: openai.OpenAI) -> None:
    response = openai_client.responses.create(
        model=MODEL, input="Hello there", instructions="Be terse.", max_output_tokens=10
    )
    assert response.object == "response" and response.id.startswith("resp_") and response.model == MODEL
    assert response.status in ("completed", "incomplete") and response.output_text
    assert response.output[0].type == "message" and response.output[0].content[0].type == "output_text"
    assert response.usage and response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens


def test_max_output_tokens_makes_it_incomplete(openai_client: openai.OpenAI) -> None:
    response = openai_client.responses.create(model=MODEL, input="Tell me everything", max_output_tokens=2)
    assert response.status == "incomplete" and response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"


def test_a_streamed_response(openai_client: openai.OpenAI) -> None:
    whole = openai_client.responses.create(model=MODEL, input="Stream to me", max_output_tokens=12)
    events = list(openai_client.responses.create(model=MODEL, input="Stream to me", max_output_tokens=12, stream=True))
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
    text = "".join(e.delta for e in events if isinstance(e, ResponseTextDeltaEvent))
    last = events[-1]
    assert isinstance(last, ResponseCompletedEvent | ResponseIncompleteEvent)
    assert text == whole.output_text == last.response.output_text
    assert last.response.usage and whole.usage and last.response.usage.output_tokens == whole.usage.output_tokens


def test_tools_and_their_outputs(openai_client: openai.OpenAI) -> None:
    called = openai_client.responses.create(model=MODEL, input="What is the weather in Paris?", tools=[WEATHER])
    call = next(item for item in called.output if item.type == "function_call")
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    # The agent loop: the call's output continues the stored conversation.
    answered = openai_client.responses.create(
        model=MODEL,
        previous_response_id=called.id,
        tools=[WEATHER],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
    )
    assert answered.output_text and answered.previous_response_id == called.id


def test_a_streamed_function_call(openai_client: openai.OpenAI) -> None:
    events = list(
        openai_client.responses.create(
            model=MODEL,
            input="Weather in Lyon?",
            tools=[WEATHER],
            tool_choice={"type": "function", "name": "get_weather"},
            stream=True,
        )
    )
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert json.loads(done.arguments) == {"city": "Lyon"}
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert deltas == done.arguments


def test_stored_responses_belong_to_their_key(stack: Stack, openai_client: openai.OpenAI) -> None:
    response = openai_client.responses.create(model=MODEL, input="Remember me", max_output_tokens=5)
    assert openai_client.responses.retrieve(response.id).output_text == response.output_text
    items = openai_client.responses.input_items.list(response.id)
    assert [i.type for i in items.data] == ["message"]
    other = openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=stack.create_key("other"), max_retries=0)
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(response.id)
    with pytest.raises(openai.BadRequestError):  # nor continue it
        other.responses.create(model=MODEL, input="x", previous_response_id=response.id)
    openai_client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.retrieve(response.id)
    unstored = openai_client.responses.create(model=MODEL, input="Forget me", store=False, max_output_tokens=5)
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.retrieve(unstored.id)


def test_bad_requests_are_400s(stack: Stack, api_key: str, openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as built_in:
        openai_client.responses.create(model=MODEL, input="x", tools=[{"type": "web_search"}])
    assert "web_search" in built_in.value.message
    for body in (
        {"input": "no model"},
        {"model": MODEL, "input": 5},
        {"model": MODEL, "input": [{"role": "robot", "content": "x"}]},
    ):
        resp = httpx.post(
            f"{stack.gateway_url}/v1/responses", headers={"authorization": f"Bearer {api_key}"}, json=body
        )
        assert resp.status_code == 400 and resp.json()["error"]["message"], (body, resp.text)


def test_the_open_responses_compliance_requests(openai_client: openai.OpenAI) -> None:
    """The requests of the Open Responses compliance suite (basic, system prompt, image, multi-turn):
    each completes with output, as its validators ask."""
    image = (
        "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQ"
        "AAAABJRU5ErkJggg=="
    )
    inputs: list[ResponseInputParam] = [
        [{"type": "message", "role": "user", "content": "Say hello in exactly 3 words."}],
        [
            {"type": "message", "role": "system", "content": "You are a pirate."},
            {"type": "message", "role": "user", "content": "Say hello."},
        ],
        [
            cast(  # as the suite sends it: an image without the `detail` the SDK's types require
                EasyInputMessageParam,
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What do you see?"},
                        {"type": "input_image", "image_url": image},
                    ],
                },
            )
        ],
        [
            {"type": "message", "role": "user", "content": "My name is Alice."},
            {"type": "message", "role": "assistant", "content": "Hello Alice!"},
            {"type": "message", "role": "user", "content": "What is my name?"},
        ],
    ]
    for items in inputs:
        response = openai_client.responses.create(model=MODEL, input=items)
        assert response.status == "completed" and response.output and response.completed_at, items
