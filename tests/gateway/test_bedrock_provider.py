"""AWS Bedrock's Converse API through the gateway, with the OpenAI SDK as the client: SigV4-signed requests
(long-term keys from the environment, temporary ones from a credentials file, or a Bedrock API key),
translation both ways, streams in AWS's binary event stream, tools, errors, and credentials kept out of
logs."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio
from openai.types.chat import ChatCompletionFunctionToolParam, ChatCompletionMessageParam

from tests.conftest import STATIC_KEY
from tests.fakes import bedrock_runtime
from tests.gateway.conftest import Fleet, Gateway, openai_sdk
from tests.gateway.provider_gateway import error_of, gateway_with_providers, streamed
from tests.gateway.servers import serve_aiohttp
from tests.json_values import json_object

KEY_ID, SECRET = "AKIA" + uuid.uuid4().hex[:16].upper(), "secret-" + uuid.uuid4().hex
TEMP_ID, TEMP_SECRET, SESSION = (
    "ASIA" + uuid.uuid4().hex[:16].upper(),
    "temp-" + uuid.uuid4().hex,
    "session-" + uuid.uuid4().hex,
)
API_KEY = "ABSK" + uuid.uuid4().hex
SONNET = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
HEADERS = {"Authorization": f"Bearer {STATIC_KEY}"}
TOOLS: list[ChatCompletionFunctionToolParam] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
        },
    }
]


@dataclass
class Bedrock:
    gateway: Gateway
    fake_url: str
    log: io.StringIO

    async def post(self, body: dict[str, Any], path: str = "chat/completions") -> httpx.Response:
        return await self.gateway.client.post(f"/v1/{path}", json=body, headers=HEADERS)

    async def fake(self, what: str) -> dict[str, Any]:
        async with httpx.AsyncClient() as client:
            return json_object((await client.get(f"{self.fake_url}/{what}")).json())


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def bedrock(fleet: Fleet) -> AsyncIterator[Bedrock]:
    credentials = fleet.workdir / "aws-credentials"
    credentials.write_text(
        f"[default]\naws_access_key_id = {KEY_ID}\naws_secret_access_key = wrong-{SECRET}\n\n"
        f"[iir]\naws_access_key_id = {TEMP_ID}\naws_secret_access_key = {TEMP_SECRET}\naws_session_token = {SESSION}\n"
    )
    keys = {KEY_ID: (SECRET, ""), TEMP_ID: (TEMP_SECRET, SESSION)}
    async with serve_aiohttp(bedrock_runtime.make_app(keys, API_KEY)) as fake_url:
        base = {"kind": "bedrock", "base_url": fake_url, "retries": 0, "bedrock": {"region": "us-east-1"}}
        models = {
            "sonnet": {"deployment": SONNET},
            "amazon.nova-pro-v1:0": {},
            "throttled-model": {},
            "stream-error-model": {},
        }
        file_options = {"region": "us-east-1", "credentials_file": str(credentials)}
        providers = {
            "bedrock": {**base, "models": models},  # keys from the environment
            "bedrock-temp": {**base, "bedrock": {**file_options, "profile": "iir"}, "models": ["amazon.nova-pro-v1:0"]},
            "bedrock-key": {**base, "api_key_env": "IIR_TEST_BEDROCK_API_KEY", "models": ["amazon.nova-pro-v1:0"]},
            "bedrock-wrong": {**base, "bedrock": file_options, "models": ["amazon.nova-pro-v1:0"]},
            "bedrock-none": {**base, "bedrock": {**file_options, "profile": "nobody"}, "models": ["x"]},
        }
        env = {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET, "IIR_TEST_BEDROCK_API_KEY": API_KEY}
        async with gateway_with_providers(fleet, "bedrock", providers, env) as (gateway, log):
            yield Bedrock(gateway, fake_url, log)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def client(bedrock: Bedrock) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai_sdk(bedrock.gateway, STATIC_KEY) as sdk:
        yield sdk


async def test_converse_through_the_openai_sdk(client: openai.AsyncOpenAI, bedrock: Bedrock) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model="bedrock/sonnet",
        max_tokens=50,
        temperature=0.2,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi!"},
            {"role": "user", "content": "How"},
            {"role": "user", "content": [{"type": "text", "text": "are you?"}]},
        ],
    )
    assert raw.headers["x-iir-model"] == "bedrock/sonnet"
    answer = raw.parse()
    assert answer.choices[0].message.content == "Bedrock heard: How are you?"
    assert answer.choices[0].finish_reason == "stop"
    # Cached input counts as prompt tokens.
    assert answer.usage is not None and (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (9, 5)
    sent = await bedrock.fake("_last")
    assert sent["model"] == SONNET  # the deployment's model ID, `:` and all, in the signed path
    assert sent["system"] == [{"text": "Be brief."}]
    assert sent["inferenceConfig"] == {"maxTokens": 50, "temperature": 0.2}
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]  # consecutive turns merged
    meta = await bedrock.fake("_meta")
    assert meta["auth"] == "sigv4" and meta["signed"] == ["content-type", "host", "x-amz-date"]


async def test_the_event_stream_is_translated_chunk_by_chunk(client: openai.AsyncOpenAI) -> None:
    chunks = await streamed(client, "bedrock/amazon.nova-pro-v1:0", "Bedrock", 5)
    assert chunks[0].choices[0].delta.role == "assistant"
    plain = await client.chat.completions.create(
        model="bedrock/amazon.nova-pro-v1:0", stream=True, messages=[{"role": "user", "content": "hi"}]
    )
    assert all([c.choices async for c in plain])  # no usage chunk unless asked for


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_calls_round_trip(client: openai.AsyncOpenAI, bedrock: Bedrock, stream: bool) -> None:
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is the weather in Paris?"}]
    if stream:
        chunks = [
            c
            async for c in await client.chat.completions.create(
                model="bedrock/sonnet", messages=messages, tools=TOOLS, stream=True
            )
        ]
        calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
        assert calls[0].id and calls[0].function and calls[0].function.name == "get_weather"
        call_id = calls[0].id
        arguments = "".join(tc.function.arguments or "" for tc in calls if tc.function)
        assert all(tc.index == 0 for tc in calls)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finish == ["tool_calls"]
    else:
        answer = await client.chat.completions.create(
            model="bedrock/sonnet", messages=messages, tools=TOOLS, tool_choice="required"
        )
        assert answer.choices[0].finish_reason == "tool_calls" and answer.choices[0].message.content == "Let me check."
        tool_calls = answer.choices[0].message.tool_calls
        assert tool_calls and tool_calls[0].type == "function" and tool_calls[0].function.name == "get_weather"
        call_id, arguments = tool_calls[0].id, tool_calls[0].function.arguments
        config = (await bedrock.fake("_last"))["toolConfig"]
        assert config["toolChoice"] == {"any": {}}
        assert config["tools"][0]["toolSpec"]["inputSchema"]["json"]["required"] == ["location"]
    assert json.loads(arguments) == {"location": "Paris"}
    messages += [
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": '{"celsius": 18}'},
    ]
    final = await client.chat.completions.create(model="bedrock/sonnet", messages=messages, tools=TOOLS)
    assert final.choices[0].message.content == "It is 18 degrees in Paris."
    sent = (await bedrock.fake("_last"))["messages"]
    assert sent[1]["content"][1] == {
        "toolUse": {"toolUseId": call_id, "name": "get_weather", "input": {"location": "Paris"}}
    }
    assert sent[2]["content"] == [
        {"toolResult": {"toolUseId": call_id, "content": [{"json": {"celsius": 18}}], "status": "success"}}
    ]


async def test_stop_reasons(client: openai.AsyncOpenAI) -> None:
    cut = await client.chat.completions.create(
        model="bedrock/sonnet", max_tokens=2, messages=[{"role": "user", "content": "a b c"}]
    )
    assert cut.choices[0].finish_reason == "length" and cut.choices[0].message.content == "Bedrock heard:"
    stopped = await client.chat.completions.create(
        model="bedrock/sonnet", stop="b", messages=[{"role": "user", "content": "a b c"}]
    )
    assert stopped.choices[0].finish_reason == "stop" and stopped.choices[0].message.content == "Bedrock heard: a "


async def test_temporary_credentials_and_api_keys(client: openai.AsyncOpenAI, bedrock: Bedrock) -> None:
    temp = await client.chat.completions.create(
        model="bedrock-temp/amazon.nova-pro-v1:0", messages=[{"role": "user", "content": "Hi"}]
    )
    assert temp.choices[0].message.content == "Bedrock heard: Hi"
    assert "x-amz-security-token" in (await bedrock.fake("_meta"))["signed"]
    keyed = await client.chat.completions.create(
        model="bedrock-key/amazon.nova-pro-v1:0", messages=[{"role": "user", "content": "Hi"}]
    )
    assert keyed.choices[0].message.content == "Bedrock heard: Hi"
    assert (await bedrock.fake("_meta"))["auth"] == "bearer"


async def test_errors_are_openai_errors_with_the_right_status(bedrock: Bedrock) -> None:
    ask = {"messages": [{"role": "user", "content": "x"}]}
    throttled = await bedrock.post({**ask, "model": "bedrock/throttled-model"})
    assert throttled.status_code == 429 and error_of(throttled)["code"] == "upstream_rate_limited"
    unknown = await bedrock.post({**ask, "model": "bedrock/no-such-model"})
    assert unknown.status_code == 400 and "model identifier is invalid" in error_of(unknown)["message"]
    embeddings = await bedrock.post({"model": "bedrock/sonnet", "input": "x"}, "embeddings")
    assert embeddings.status_code == 400 and error_of(embeddings)["code"] == "unsupported_endpoint"
    wrong = await bedrock.post({**ask, "model": "bedrock-wrong/amazon.nova-pro-v1:0"})
    assert wrong.status_code == 502 and error_of(wrong)["code"] == "upstream_auth_failed"
    assert "signature we calculated does not match" in error_of(wrong)["message"]
    none = await bedrock.post({**ask, "model": "bedrock-none/x"})
    assert none.status_code == 404 and error_of(none)["code"] == "provider_not_configured"
    assert "[nobody]" in error_of(none)["message"]
    broken = await bedrock.post({**ask, "model": "bedrock/stream-error-model", "stream": True})
    assert broken.status_code == 200
    events = [json.loads(line[6:]) for line in broken.text.splitlines() if line.startswith("data: {")]
    assert (
        events[-1]["error"]["code"] == "upstream_error"
        and "modelStreamErrorException" in events[-1]["error"]["message"]
    )


async def test_credentials_never_reach_the_logs(bedrock: Bedrock) -> None:
    log = bedrock.log.getvalue()
    assert log
    for secret in (SECRET, TEMP_SECRET, SESSION, API_KEY):
        assert secret not in log
