"""Azure OpenAI through the gateway, with the OpenAI SDK as the client: deployments named by the providers
file, `api-version`, the `api-key` header or a Microsoft Entra ID token (client credentials, cached),
streams with Azure's content filter chunks, tools, embeddings, errors, and credentials kept out of logs."""

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
from tests.fakes import azure_openai
from tests.gateway.conftest import Fleet, Gateway, openai_sdk
from tests.gateway.provider_gateway import error_of, gateway_with_providers, streamed
from tests.gateway.servers import serve_aiohttp
from tests.json_values import json_object

AZURE_KEY = "azure-test-key-" + uuid.uuid4().hex
CLIENT_SECRET = "entra-secret-" + uuid.uuid4().hex
HEADERS = {"Authorization": f"Bearer {STATIC_KEY}"}
TOOLS: list[ChatCompletionFunctionToolParam] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
        },
    }
]


@dataclass
class Azure:
    gateway: Gateway
    fake_url: str
    log: io.StringIO

    async def post(self, body: dict[str, Any], path: str = "chat/completions") -> httpx.Response:
        return await self.gateway.client.post(f"/v1/{path}", json=body, headers=HEADERS)

    async def fake(self, what: str) -> dict[str, Any]:
        async with httpx.AsyncClient() as client:
            return json_object((await client.get(f"{self.fake_url}/{what}")).json())


def providers(fake_url: str, secret_file: str, wrong_secret_file: str) -> dict[str, Any]:
    token_url = f"{fake_url}/{azure_openai.TENANT}/oauth2/v2.0/token"
    entra = {"tenant_id": azure_openai.TENANT, "client_id": azure_openai.CLIENT_ID, "token_url": token_url}
    return {
        "azure": {
            "kind": "azure",
            "base_url": fake_url,
            "api_key_env": "IIR_TEST_AZURE_OPENAI_API_KEY",
            "retries": 0,
            "models": {
                "gpt-4o": {"deployment": "gpt-4o-prod"},
                "gpt-4o-mini": {},
                "text-embedding-3-small": {"deployment": "embed-small"},
                "gpt-429": {},
                "gpt-500": {"fallbacks": ["azure/gpt-4o"]},
            },
        },
        "azure-entra": {
            "kind": "azure",
            "base_url": fake_url,
            "azure": {"api_version": "2025-04-01-preview", "entra": {**entra, "client_secret_file": secret_file}},
            "models": {"gpt-4o": {"deployment": "gpt-4o-prod"}},
        },
        "azure-wrong": {
            "kind": "azure",
            "base_url": fake_url,
            "retries": 0,
            "azure": {"entra": {**entra, "client_secret_file": wrong_secret_file}},
            "models": ["gpt-4o-mini"],
        },
        "azure-unset": {
            "kind": "azure",
            "base_url": fake_url,
            "azure": {"entra": {**entra, "client_secret_env": "IIR_TEST_AZURE_SECRET_UNSET"}},
            "models": ["gpt-4o-mini"],
        },
    }


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def azure(fleet: Fleet) -> AsyncIterator[Azure]:
    secret_file = fleet.workdir / "azure-client-secret"
    secret_file.write_text(CLIENT_SECRET + "\n")  # as a mounted Secret
    wrong_file = fleet.workdir / "azure-wrong-secret"
    wrong_file.write_text("not-the-secret-" + uuid.uuid4().hex)
    async with serve_aiohttp(azure_openai.make_app(AZURE_KEY, CLIENT_SECRET)) as fake_url:
        files = providers(fake_url, str(secret_file), str(wrong_file))
        env = {"IIR_TEST_AZURE_OPENAI_API_KEY": AZURE_KEY}
        async with gateway_with_providers(fleet, "azure", files, env) as (gateway, log):
            yield Azure(gateway, fake_url, log)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def client(azure: Azure) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai_sdk(azure.gateway, STATIC_KEY) as sdk:
        yield sdk


async def test_a_deployment_answers_through_the_openai_sdk(client: openai.AsyncOpenAI, azure: Azure) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model="azure/gpt-4o", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    )
    assert raw.headers["x-iir-model"] == "azure/gpt-4o"
    answer = raw.parse()
    assert answer.choices[0].message.content == "Azure gpt-4o-2024-11-20 heard: Hi"
    assert answer.choices[0].finish_reason == "stop" and answer.usage is not None and answer.usage.prompt_tokens == 3
    meta = await azure.fake("_meta")
    assert meta["api_version"] == "2024-10-21" and meta["auth"] == "api-key"  # the default api-version
    assert (await azure.fake("_calls"))["gpt-4o-prod"] >= 1  # the model's deployment, not its name
    # A model without a deployment of its own is its deployment's name.
    mini = await client.chat.completions.create(model="azure/gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert mini.choices[0].message.content == "Azure gpt-4o-mini-2024-07-18 heard: x"


async def test_streams_pass_azure_chunks_and_usage(client: openai.AsyncOpenAI) -> None:
    await streamed(client, "azure/gpt-4o", "Azure gpt-4o-2024-11-20", 6)
    plain = await client.chat.completions.create(
        model="azure/gpt-4o", stream=True, messages=[{"role": "user", "content": "hi"}]
    )
    assert all([c.usage is None async for c in plain])  # the usage asked for on the client's behalf is removed


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_calls_round_trip(client: openai.AsyncOpenAI, stream: bool) -> None:
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is the weather in Paris?"}]
    if stream:
        chunks = [
            c
            async for c in await client.chat.completions.create(
                model="azure/gpt-4o", messages=messages, tools=TOOLS, stream=True
            )
        ]
        calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
        assert calls[0].id and calls[0].function and calls[0].function.name == "get_weather"
        call_id, arguments = calls[0].id, "".join(tc.function.arguments or "" for tc in calls if tc.function)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finish == ["tool_calls"]
    else:
        answer = await client.chat.completions.create(model="azure/gpt-4o", messages=messages, tools=TOOLS)
        assert answer.choices[0].finish_reason == "tool_calls"
        tool_calls = answer.choices[0].message.tool_calls
        assert tool_calls and tool_calls[0].type == "function" and tool_calls[0].function.name == "get_weather"
        call_id, arguments = tool_calls[0].id, tool_calls[0].function.arguments
    assert json.loads(arguments) == {"location": "Paris"}
    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": "18C"},
    ]
    final = await client.chat.completions.create(model="azure/gpt-4o", messages=messages, tools=TOOLS)
    assert final.choices[0].message.content == "It is 18 degrees in Paris."


async def test_embeddings_go_to_their_deployment(client: openai.AsyncOpenAI, azure: Azure) -> None:
    vectors = await client.embeddings.create(model="azure/text-embedding-3-small", input=["a", "b"], dimensions=4)
    assert [d.embedding for d in vectors.data] == [[0.5] * 4, [0.5] * 4] and vectors.usage.prompt_tokens == 2
    assert (await azure.fake("_calls"))["embed-small"] == 1


async def test_errors_are_openai_errors_with_the_right_status(azure: Azure) -> None:
    ask = {"messages": [{"role": "user", "content": "x"}]}
    limited = await azure.post({**ask, "model": "azure/gpt-429"})
    assert limited.status_code == 429 and error_of(limited)["code"] == "upstream_rate_limited"
    assert limited.headers["retry-after"] == "1" and limited.headers["x-ratelimit-remaining-requests"] == "0"
    filtered = await azure.post(
        {"model": "azure/gpt-4o", "messages": [{"role": "user", "content": "a forbidden topic"}]}
    )
    assert filtered.status_code == 400
    assert error_of(filtered)["code"] == "content_filter" and error_of(filtered)["param"] == "prompt"
    missing = await azure.post({**ask, "model": "azure/no-such-deployment"})
    assert missing.status_code == 404 and "deployment for this resource does not exist" in error_of(missing)["message"]
    # A failing deployment falls back (here to another deployment of the same resource).
    covered = await azure.post({**ask, "model": "azure/gpt-500"})
    assert covered.status_code == 200 and covered.headers["x-iir-model"] == "azure/gpt-4o"


async def test_entra_id_token_is_fetched_once_and_sent_as_bearer(client: openai.AsyncOpenAI, azure: Azure) -> None:
    for _ in range(3):
        answer = await client.chat.completions.create(
            model="azure-entra/gpt-4o", messages=[{"role": "user", "content": "Hi"}]
        )
        assert answer.choices[0].message.content == "Azure gpt-4o-2024-11-20 heard: Hi"
    meta = await azure.fake("_meta")
    assert meta["auth"] == "bearer" and meta["api_version"] == "2025-04-01-preview"
    assert meta["tokens_issued"] == 1  # cached until it expires


async def test_entra_refusing_the_secret_is_upstream_auth_failed(azure: Azure) -> None:
    resp = await azure.post({"model": "azure-wrong/gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})
    assert resp.status_code == 502 and error_of(resp)["code"] == "upstream_auth_failed"
    assert "invalid_client" in error_of(resp)["message"] and "AADSTS7000215" in error_of(resp)["message"]
    unset = await azure.post({"model": "azure-unset/gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})
    assert unset.status_code == 404 and error_of(unset)["code"] == "provider_not_configured"
    assert "IIR_TEST_AZURE_SECRET_UNSET" in error_of(unset)["message"]
    models = (await azure.gateway.client.get("/v1/models", headers=HEADERS)).json()["data"]
    ids = {m["id"] for m in models}
    assert {"azure/gpt-4o", "azure-entra/gpt-4o", "azure-wrong/gpt-4o-mini"} <= ids
    assert "azure-unset/gpt-4o-mini" not in ids


async def test_credentials_never_reach_the_logs_or_errors(client: openai.AsyncOpenAI, azure: Azure) -> None:
    await client.chat.completions.create(model="azure-entra/gpt-4o", messages=[{"role": "user", "content": "x"}])
    wrong = await azure.post({"model": "azure-wrong/gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})
    log = azure.log.getvalue()
    assert log and AZURE_KEY not in log and CLIENT_SECRET not in log and "eyJ0eXAiOiJKV1Qi." not in log
    assert "not-the-secret-" not in log and "not-the-secret-" not in wrong.text
