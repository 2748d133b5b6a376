"""Google Vertex AI through the gateway, with the OpenAI SDK as the client: Claude (Anthropic's Messages API
behind rawPredict/streamRawPredict) and Gemini (generateContent, translated both ways), authenticated as a
service account (a signed JWT exchanged for a cached access token), errors, and credentials kept out of
logs."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio
from anthropic.types import TextBlock
from openai.types.chat import ChatCompletionFunctionToolParam, ChatCompletionMessageParam

from tests.conftest import STATIC_KEY
from tests.fakes import vertex_ai
from tests.gateway.conftest import Fleet, Gateway, anthropic_sdk, openai_sdk
from tests.gateway.provider_gateway import error_of, gateway_with_providers, streamed
from tests.gateway.servers import serve_aiohttp
from tests.json_values import json_object

PROJECT = "iir-test-project"
CLAUDE = "claude-sonnet-4-5@20250929"
HEADERS = {"Authorization": f"Bearer {STATIC_KEY}"}
TOOLS: list[ChatCompletionFunctionToolParam] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather of a city",
            "parameters": {
                "type": "object",
                "properties": {"location": {"type": "string"}, "unit": {"type": ["string", "null"]}},
                "required": ["location"],
                "additionalProperties": False,  # not in Gemini's schema: left out
                "$schema": "http://json-schema.org/draft-07/schema#",
            },
        },
    }
]


@dataclass
class Vertex:
    gateway: Gateway
    fake_url: str
    log: io.StringIO
    private_key: str

    async def post(self, body: dict[str, Any], path: str = "chat/completions") -> httpx.Response:
        return await self.gateway.client.post(f"/v1/{path}", json=body, headers=HEADERS)

    async def fake(self, what: str) -> dict[str, Any]:
        async with httpx.AsyncClient() as client:
            return json_object((await client.get(f"{self.fake_url}/{what}")).json())


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def vertex(fleet: Fleet) -> AsyncIterator[Vertex]:
    # The fake needs the account's public key before it starts; the key file needs the fake's token URL.
    placeholder, _ = vertex_ai.service_account("http://127.0.0.1/token", PROJECT)
    impostor, _ = vertex_ai.service_account("http://127.0.0.1/token", PROJECT)
    account, public = vertex_ai.service_account("", PROJECT)
    del placeholder
    app = vertex_ai.make_app(PROJECT, public, account["client_email"])
    async with serve_aiohttp(app) as fake_url:
        account["token_uri"] = impostor["token_uri"] = f"{fake_url}/token"
        impostor["client_email"] = account["client_email"]  # the right account, the wrong key
        key_file, impostor_file = fleet.workdir / "vertex-sa.json", fleet.workdir / "vertex-impostor.json"
        key_file.write_text(json.dumps(account))
        impostor_file.write_text(json.dumps(impostor))
        models = {CLAUDE: {}, "sonnet": {"deployment": CLAUDE}, "gemini-2.5-flash": {}, "gemini-429": {}}
        base = {"kind": "vertex", "base_url": fake_url, "retries": 0}
        providers = {
            "vertex": {**base, "vertex": {"project": PROJECT, "credentials_file": str(key_file)}, "models": models},
            # The key file from GOOGLE_APPLICATION_CREDENTIALS, the project from the key file.
            "vertex-adc": {**base, "models": ["gemini-2.5-flash"]},
            "vertex-other": {**base, "vertex": {"project": "not-mine", "credentials_file": str(key_file)}},
            "vertex-impostor": {**base, "vertex": {"credentials_file": str(impostor_file)}, "models": ["gemini-x"]},
            "vertex-nokey": {**base, "vertex": {"credentials_file": str(fleet.workdir / "missing.json")}},
        }
        env = {"GOOGLE_APPLICATION_CREDENTIALS": str(key_file)}
        async with gateway_with_providers(fleet, "vertex", providers, env) as (gateway, log):
            yield Vertex(gateway, fake_url, log, account["private_key"])


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def client(vertex: Vertex) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai_sdk(vertex.gateway, STATIC_KEY) as sdk:
        yield sdk


# Claude --------------------------------------------------------------------------------------------------------


async def test_claude_on_vertex_through_the_openai_sdk(client: openai.AsyncOpenAI, vertex: Vertex) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model=f"vertex/{CLAUDE}",
        max_tokens=50,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
    )
    assert raw.headers["x-iir-model"] == f"vertex/{CLAUDE}"
    answer = raw.parse()
    assert answer.choices[0].message.content == "Claude heard: Hello" and answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.completion_tokens == 3
    sent = await vertex.fake("_last")
    assert sent["anthropic_version"] == "vertex-2023-10-16" and sent["system"] == "Be brief."
    assert sent["model"] == CLAUDE  # the fake records the URL's model: the body has none (it would be a 400)
    alias = await client.chat.completions.create(model="vertex/sonnet", messages=[{"role": "user", "content": "x"}])
    assert alias.choices[0].message.content == "Claude heard: x"


async def test_claude_on_vertex_streams(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model=f"vertex/{CLAUDE}",
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Stream this please"}],
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Claude heard: Stream this please"
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 3
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


async def test_claude_on_vertex_tool_calls(client: openai.AsyncOpenAI) -> None:
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is the weather in Paris?"}]
    answer = await client.chat.completions.create(model=f"vertex/{CLAUDE}", messages=messages, tools=TOOLS)
    calls = answer.choices[0].message.tool_calls
    assert answer.choices[0].finish_reason == "tool_calls" and calls and calls[0].type == "function"
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [calls[0].model_dump()]},  # type: ignore[list-item]
        {"role": "tool", "tool_call_id": calls[0].id, "content": "18C"},
    ]
    final = await client.chat.completions.create(model=f"vertex/{CLAUDE}", messages=messages, tools=TOOLS)
    assert final.choices[0].message.content == "It is 18 degrees in Paris."


async def test_the_messages_api_reaches_claude_on_vertex(vertex: Vertex) -> None:
    async with anthropic_sdk(vertex.gateway, STATIC_KEY) as client:
        message = await client.messages.create(
            model=f"vertex/{CLAUDE}", max_tokens=50, system="Be brief.", messages=[{"role": "user", "content": "Hi"}]
        )
    block = message.content[0]
    assert isinstance(block, TextBlock) and block.text == "Claude heard: Hi"
    sent = await vertex.fake("_last")
    assert sent["anthropic_version"] == "vertex-2023-10-16" and sent["messages"] == [{"role": "user", "content": "Hi"}]


# Gemini --------------------------------------------------------------------------------------------------------


async def test_gemini_through_the_openai_sdk(client: openai.AsyncOpenAI, vertex: Vertex) -> None:
    answer = await client.chat.completions.create(
        model="vertex/gemini-2.5-flash",
        temperature=0.5,
        max_tokens=40,
        stop=["never"],
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi!"},
            {"role": "user", "content": "How"},
            {"role": "user", "content": [{"type": "text", "text": "are you?"}]},
        ],
    )
    assert answer.choices[0].message.content == "Gemini heard: How are you?"
    assert answer.choices[0].finish_reason == "stop" and answer.model == "gemini-2.5-flash"
    assert answer.usage is not None and (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (7, 5)
    sent = (await vertex.fake("_last"))["sent"]
    assert sent["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert [c["role"] for c in sent["contents"]] == ["user", "model", "user"]  # consecutive turns merged
    assert sent["generationConfig"] == {"temperature": 0.5, "maxOutputTokens": 40, "stopSequences": ["never"]}


async def test_gemini_streams(client: openai.AsyncOpenAI) -> None:
    chunks = await streamed(client, "vertex/gemini-2.5-flash", "Gemini", 5)
    assert chunks[0].choices[0].delta.role == "assistant"


@pytest.mark.parametrize("stream", [False, True])
async def test_gemini_tool_calls_round_trip(client: openai.AsyncOpenAI, vertex: Vertex, stream: bool) -> None:
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is the weather in Paris?"}]
    if stream:
        chunks = [
            c
            async for c in await client.chat.completions.create(
                model="vertex/gemini-2.5-flash", messages=messages, tools=TOOLS, tool_choice="auto", stream=True
            )
        ]
        calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
        assert len(calls) == 1 and calls[0].id and calls[0].function and calls[0].function.name == "get_weather"
        call_id, arguments = calls[0].id, calls[0].function.arguments or ""
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finish == ["tool_calls"]
    else:
        answer = await client.chat.completions.create(
            model="vertex/gemini-2.5-flash", messages=messages, tools=TOOLS, tool_choice="required"
        )
        assert answer.choices[0].finish_reason == "tool_calls" and answer.choices[0].message.content is None
        tool_calls = answer.choices[0].message.tool_calls
        assert tool_calls and tool_calls[0].type == "function" and tool_calls[0].function.name == "get_weather"
        call_id, arguments = tool_calls[0].id, tool_calls[0].function.arguments
        sent = (await vertex.fake("_last"))["sent"]
        assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
        declared = sent["tools"][0]["functionDeclarations"][0]["parameters"]
        assert declared["properties"]["unit"] == {"type": "string", "nullable": True}
    assert json.loads(arguments) == {"location": "Paris"}
    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": "18C, sunny"},
    ]
    final = await client.chat.completions.create(model="vertex/gemini-2.5-flash", messages=messages, tools=TOOLS)
    assert final.choices[0].message.content == "It is 18 degrees in Paris."
    sent = (await vertex.fake("_last"))["sent"]
    assert sent["contents"][1] == {
        "role": "model",
        "parts": [{"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}}],
    }
    assert sent["contents"][2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"content": "18C, sunny"}}}
    ]


async def test_gemini_finish_reasons_and_json(client: openai.AsyncOpenAI) -> None:
    cut = await client.chat.completions.create(
        model="vertex/gemini-2.5-flash", max_tokens=2, messages=[{"role": "user", "content": "a b c"}]
    )
    assert cut.choices[0].finish_reason == "length" and cut.choices[0].message.content == "Gemini heard:"
    blocked = await client.chat.completions.create(
        model="vertex/gemini-2.5-flash", messages=[{"role": "user", "content": "a forbidden topic"}]
    )
    assert blocked.choices[0].finish_reason == "content_filter"
    structured = await client.chat.completions.create(
        model="vertex/gemini-2.5-flash",
        response_format={"type": "json_object"},
        messages=[{"role": "user", "content": "json please"}],
    )
    assert json.loads(structured.choices[0].message.content or "") == {"answer": "Gemini heard: json please"}


async def test_gemini_with_the_default_credentials_and_the_key_files_project(client: openai.AsyncOpenAI) -> None:
    answer = await client.chat.completions.create(
        model="vertex-adc/gemini-2.5-flash", messages=[{"role": "user", "content": "Hi"}]
    )
    assert answer.choices[0].message.content == "Gemini heard: Hi"


# Errors, credentials ------------------------------------------------------------------------------------------


async def test_errors_are_openai_errors_with_the_right_status(vertex: Vertex) -> None:
    ask = {"messages": [{"role": "user", "content": "x"}]}
    limited = await vertex.post({**ask, "model": "vertex/gemini-429"})
    assert limited.status_code == 429 and error_of(limited)["code"] == "upstream_rate_limited"
    assert "Resource exhausted" in error_of(limited)["message"]
    embeddings = await vertex.post({"model": "vertex/gemini-2.5-flash", "input": "x"}, "embeddings")
    assert embeddings.status_code == 400 and error_of(embeddings)["code"] == "unsupported_endpoint"
    n = await vertex.post({**ask, "model": "vertex/gemini-2.5-flash", "n": 2})
    assert n.status_code == 400 and error_of(n)["param"] == "n"
    other = await vertex.post({**ask, "model": "vertex-other/gemini-2.5-flash"})
    assert other.status_code == 502 and error_of(other)["code"] == "upstream_auth_failed"
    assert "PERMISSION_DENIED" in error_of(other)["message"] or "denied" in error_of(other)["message"]
    impostor = await vertex.post({**ask, "model": "vertex-impostor/gemini-x"})
    assert impostor.status_code == 502 and error_of(impostor)["code"] == "upstream_auth_failed"
    assert "invalid_grant" in error_of(impostor)["message"] and "Invalid JWT Signature" in error_of(impostor)["message"]
    missing = await vertex.post({**ask, "model": "vertex-nokey/gemini-2.5-flash"})
    assert missing.status_code == 404 and error_of(missing)["code"] == "provider_not_configured"
    assert "missing.json" in error_of(missing)["message"]


async def test_the_access_token_is_cached(client: openai.AsyncOpenAI, vertex: Vertex) -> None:
    await client.chat.completions.create(model="vertex/gemini-2.5-flash", messages=[{"role": "user", "content": "x"}])
    before = (await vertex.fake("_meta"))["tokens_issued"]
    for _ in range(3):
        await client.chat.completions.create(model=f"vertex/{CLAUDE}", messages=[{"role": "user", "content": "x"}])
    assert (await vertex.fake("_meta"))["tokens_issued"] == before


async def test_credentials_never_reach_the_logs(vertex: Vertex) -> None:
    log = vertex.log.getvalue()
    key_body = vertex.private_key.splitlines()[1]
    assert log and key_body not in log and "ya29." not in log and "BEGIN PRIVATE KEY" not in log
    impostor = await vertex.post({"model": "vertex-impostor/gemini-x", "messages": [{"role": "user", "content": "x"}]})
    assert "eyJ" not in impostor.text  # the signed assertion is not echoed either
