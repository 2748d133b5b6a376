"""Answers read against the published schemas, not against our own expectations: the `openai` and
`anthropic` SDKs' types (generated from OpenAI's and Anthropic's API specifications), validated in full
(`model_validate`: every required field, every type, every enum value, no null where none is allowed),
where the SDKs themselves only `construct` what arrives. The Responses API is also held to the Open
Responses suite's schemas (`make test-openresponses`)."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import openai
import pytest
from anthropic.types import ErrorResponse as AnthropicError
from anthropic.types import Message, MessageTokensCount, RawMessageStreamEvent
from openai.types import Batch, FileObject
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent
from openai.types.shared import ErrorObject
from pydantic import TypeAdapter

from tests.conftest import SERVED
from tests.gateway.test_batches import finished
from tests.integration.test_batches import chat_line, jsonl

MODEL = f"local/{SERVED}"
HI = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        "strict": True,
    },
}


def events(text: str) -> list[Any]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


async def test_chat_completions(http: httpx.AsyncClient) -> None:
    for extra in ({}, {"logprobs": True, "top_logprobs": 2}, {"tools": [WEATHER], "tool_choice": "required"}):
        body = {"model": MODEL, "messages": HI, "max_tokens": 40, **extra}
        whole = await http.post("/v1/chat/completions", json=body)
        ChatCompletion.model_validate(whole.json())
        streamed = await http.post("/v1/chat/completions", json={**body, "stream": True})
        chunks = events(streamed.text)
        assert chunks and [ChatCompletionChunk.model_validate(c) for c in chunks]


async def test_files_and_batches(http: httpx.AsyncClient, openai_client: openai.AsyncOpenAI) -> None:
    content = jsonl([chat_line(f"s-{i}", f"question {i}") for i in range(2)])
    uploaded = await http.post("/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"})
    FileObject.model_validate(uploaded.json())
    assert "status_details" not in uploaded.json()  # deprecated, and never null in the schema
    page = (await http.get("/v1/files", params={"limit": 1})).json()
    assert page["object"] == "list" and {"first_id", "last_id", "has_more"} <= set(page)
    assert [FileObject.model_validate(f) for f in page["data"]]
    assert FileObject.model_validate((await http.get(f"/v1/files/{uploaded.json()['id']}")).json())
    created = await http.post(
        "/v1/batches",
        json={"input_file_id": uploaded.json()["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"},
    )
    Batch.model_validate(created.json())
    done = await finished(openai_client, created.json()["id"])
    Batch.model_validate((await http.get(f"/v1/batches/{done.id}")).json())
    assert done.output_file_id
    output = (await http.get(f"/v1/files/{done.output_file_id}/content")).text.splitlines()
    for line in map(json.loads, output):  # each line's body is a chat completion, as OpenAI's own
        ChatCompletion.model_validate(line["response"]["body"])


async def test_responses(http: httpx.AsyncClient) -> None:
    tool = {"type": "function", **WEATHER["function"]}  # type: ignore[dict-item]
    for extra in ({}, {"include": ["message.output_text.logprobs"]}, {"tools": [tool], "tool_choice": "required"}):
        body = {"model": MODEL, "input": "What is the weather in Paris?", "max_output_tokens": 40, **extra}
        Response.model_validate((await http.post("/v1/responses", json=body)).json())
        streamed = events((await http.post("/v1/responses", json={**body, "stream": True})).text)
        adapter: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
        assert streamed and [adapter.validate_python(e) for e in streamed]


async def test_anthropic_messages(http: httpx.AsyncClient) -> None:
    tool = {"name": "get_weather", "input_schema": WEATHER["function"]["parameters"]}  # type: ignore[index]
    forced = {"tools": [tool], "tool_choice": {"type": "tool", "name": "get_weather"}}
    for extra in ({}, {"system": "Be brief.", "stop_sequences": ["."]}, forced):
        body = {"model": MODEL, "max_tokens": 40, "messages": HI, **extra}
        Message.model_validate((await http.post("/v1/messages", json=body)).json())
        streamed = events((await http.post("/v1/messages", json={**body, "stream": True})).text)
        adapter: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
        assert streamed and [adapter.validate_python(e) for e in streamed]
    counted = await http.post("/v1/messages/count_tokens", json={"model": MODEL, "messages": HI})
    MessageTokensCount.model_validate(counted.json())


async def test_errors_on_every_route_carry_detail_and_parse_in_the_sdks(
    http: httpx.AsyncClient, openai_client: openai.AsyncOpenAI, anthropic_client: anthropic.AsyncAnthropic
) -> None:
    failures = [
        await http.post("/v1/chat/completions", json={"model": MODEL}),  # 400
        await http.post("/v1/chat/completions", json={"model": "local/nope", "messages": HI}),  # 404
        await http.get("/v1/files/file-nope"),
        await http.get("/v1/batches/batch_nope"),
        await http.get("/v1/responses/resp_nope"),
        await http.get("/status/job_nope"),
        await http.get("/api/v1/teams"),  # 403: not an admin key
        await http.get("/no/such/route"),
        await http.delete("/v1/models"),  # 405
        await http.post("/v1/chat/completions", headers={"authorization": "Bearer wrong"}, json={}),  # 401
    ]
    for resp in failures:
        assert resp.status_code >= 400, resp.text
        body = resp.json()
        ErrorObject.model_validate(body["error"])
        assert body["detail"] == body["error"]["message"], body  # the seed's field beside OpenAI's object
    anthropic_failure = await http.post("/v1/messages", json={"model": "local/nope", "max_tokens": 5, "messages": HI})
    AnthropicError.model_validate(anthropic_failure.json())
    assert anthropic_failure.json()["detail"] == anthropic_failure.json()["error"]["message"]
    # The SDKs read the same bodies into their own errors.
    with pytest.raises(openai.NotFoundError) as not_found:
        await openai_client.files.retrieve("file-nope")
    assert not_found.value.code and not_found.value.message
    with pytest.raises(anthropic.NotFoundError) as unknown:
        await anthropic_client.messages.create(model="local/nope", max_tokens=5, messages=HI)  # type: ignore[arg-type]
    assert unknown.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
