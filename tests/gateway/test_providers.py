"""External providers through the gateway app: OpenAI-compatible and Anthropic fakes speaking the real wire
formats, retries, fallbacks, timeouts, the circuit breaker, credentials, secret scrubbing (moved from
tests/integration/test_providers.py; a bad providers file stopping the process stays there)."""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio
import yaml
from anthropic.types import MessageParam, TextBlock, ToolParam
from openai.types.chat import ChatCompletionFunctionToolParam, ChatCompletionMessageParam
from openai.types.responses import FunctionToolParam

from iir_dev.datastores import free_port
from iir_gateway.app import create_asgi
from tests.conftest import EMBEDDER, MASTER_KEY, SERVED, STATIC_KEY
from tests.gateway.conftest import (
    ANTHROPIC_KEY,
    OPENAI_KEY,
    Fleet,
    Gateway,
    anthropic_sdk,
    logged_lines,
    openai_sdk,
)
from tests.gateway.servers import lifespan
from tests.json_values import json_object

HEADERS = {"Authorization": f"Bearer {STATIC_KEY}"}
SONNET = "anthropic/claude-sonnet-4-5"


@dataclass
class Providers:
    """A gateway with this module's providers file, the fakes behind it and its log lines."""

    gateway: Gateway
    fleet: Fleet
    log: io.StringIO

    async def post(self, body: dict[str, Any], path: str = "chat/completions", **headers: str) -> httpx.Response:
        return await self.gateway.client.post(f"/v1/{path}", json=body, headers={**HEADERS, **headers})

    async def last_request(self, name: str) -> dict[str, Any]:
        async with httpx.AsyncClient() as client:
            return json_object((await client.get(f"{self.fake(name)}/_last")).json())

    async def calls(self, name: str) -> dict[str, int]:
        async with httpx.AsyncClient() as client:
            got = json_object((await client.get(f"{self.fake(name)}/_calls")).json())
        return {str(model): int(n) for model, n in got.items()}

    def fake(self, name: str) -> str:
        return self.fleet.openai_url if name == "openai" else self.fleet.anthropic_url


def providers_file(fleet: Fleet) -> dict[str, Any]:
    key_file = fleet.workdir / "providers-anthropic-key"
    key_file.write_text(ANTHROPIC_KEY + "\n")  # as a mounted Secret
    return {
        "providers": {
            "openai": {
                "base_url": f"{fleet.openai_url}/v1",
                "timeouts": {"first_token_s": 1, "total_s": 1.5},
                "models": {"gpt-4o-mini": {}, "text-embedding-3-small": {}, "gpt-500": {"fallbacks": [SONNET]}},
            },
            "anthropic": {
                "base_url": fleet.anthropic_url,
                "api_key_file": str(key_file),
                "models": ["claude-sonnet-4-5", "claude-overloaded", "claude-die"],
            },
            "broken": {
                "base_url": f"http://127.0.0.1:{free_port()}/v1",
                "api_key_required": False,
                "retries": 0,
                "models": {"down": {"fallbacks": ["openai/gpt-4o-mini"]}, "down-alone": {}},
            },
            "vault": {
                "base_url": f"{fleet.openai_url}/v1",
                "api_key_env": "IIR_TEST_VAULT_KEY_UNSET",
                "models": ["gpt-4o-mini"],
            },
            "llamacpp": {"base_url": f"{fleet.sim_url}/v1", "api_key_required": False, "models": [SERVED, EMBEDDER]},
        }
    }


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def providers(fleet: Fleet) -> AsyncIterator[Providers]:
    path = fleet.workdir / "providers-module.yaml"
    path.write_text(yaml.safe_dump(providers_file(fleet)))
    # The OpenAI key from the environment, as a Deployment sets it; no job or batch workers (not used here).
    settings = fleet.settings(providers_file=str(path), upstream_read_timeout_s=5, job_workers=0, batch_concurrency=0)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OPENAI_API_KEY", OPENAI_KEY)
        app = create_asgi(settings)
        with logged_lines() as log:
            async with lifespan(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", timeout=30) as client:
                    yield Providers(Gateway(app, client), fleet, log)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def client(providers: Providers) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai_sdk(providers.gateway, STATIC_KEY) as sdk:
        yield sdk


def error_of(resp: httpx.Response) -> dict[str, Any]:
    return json_object(resp.json()["error"])


def sse_events(resp: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in resp.text.splitlines() if line.startswith("data: {")]


# Anthropic ----------------------------------------------------------------------------------------------------


def sent_tokens(sent: dict[str, Any]) -> int:
    return max(1, len(sent.get("system", "").split())) + sum(
        max(1, len(str(m["content"]).split())) for m in sent["messages"]
    )


async def test_anthropic_through_the_openai_sdk(client: openai.AsyncOpenAI, providers: Providers) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model=SONNET,
        max_tokens=50,
        stop=["never"],
        temperature=1.5,
        user="u-1",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi!"},
            {"role": "user", "content": "How"},
            {"role": "user", "content": [{"type": "text", "text": "are you?"}]},
        ],
    )
    assert raw.headers["x-iir-model"] == SONNET
    answer = raw.parse()
    assert answer.object == "chat.completion" and answer.model == "claude-sonnet-4-5"
    assert answer.choices[0].message.content == "Claude heard: How are you?"
    assert answer.choices[0].finish_reason == "stop"
    sent = await providers.last_request("anthropic")
    assert sent["system"] == "Be brief." and sent["max_tokens"] == 50 and sent["stop_sequences"] == ["never"]
    assert sent["temperature"] == 1.0 and sent["metadata"] == {"user_id": "u-1"}
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]  # consecutive turns merged
    # Cached input counts as prompt tokens.
    assert (
        answer.usage is not None
        and answer.usage.prompt_tokens == sent_tokens(sent) + 3
        and answer.usage.completion_tokens == 5
    )


def _text(block: object) -> str:
    """An Anthropic content block's text; fails the test when it is another kind of block."""
    assert isinstance(block, TextBlock), block
    return block.text


async def test_anthropic_streaming_is_translated_chunk_by_chunk(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model=SONNET,
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Stream this please"}],
    )
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Claude heard: Stream this please"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 3  # not buffered into one
    # Without include_usage, no usage chunk.
    plain = await client.chat.completions.create(
        model=SONNET, stream=True, messages=[{"role": "user", "content": "hi"}]
    )
    assert all([c.choices async for c in plain])


async def test_anthropic_max_tokens_gives_length(client: openai.AsyncOpenAI, providers: Providers) -> None:
    answer = await client.chat.completions.create(
        model=SONNET, max_tokens=2, messages=[{"role": "user", "content": "a b c"}]
    )
    assert answer.choices[0].finish_reason == "length" and answer.choices[0].message.content == "Claude heard:"
    default = await client.chat.completions.create(model=SONNET, messages=[{"role": "user", "content": "x"}])
    assert (
        default.choices[0].finish_reason == "stop" and (await providers.last_request("anthropic"))["max_tokens"] == 4096
    )


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


@pytest.mark.parametrize("stream", [False, True])
async def test_anthropic_tool_calls_round_trip(client: openai.AsyncOpenAI, providers: Providers, stream: bool) -> None:
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is the weather in Paris?"}]
    if stream:
        chunks = [
            c
            async for c in await client.chat.completions.create(
                model=SONNET, messages=messages, tools=TOOLS, tool_choice="auto", stream=True
            )
        ]
        calls_ = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
        first = calls_[0]
        assert first.id is not None and first.function is not None and first.function.name is not None
        call_id, name = first.id, first.function.name
        arguments = "".join(tc.function.arguments or "" for tc in calls_ if tc.function)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finish == ["tool_calls"] and all(tc.index == 0 for tc in calls_)
    else:
        answer = await client.chat.completions.create(
            model=SONNET, messages=messages, tools=TOOLS, tool_choice="required"
        )
        assert answer.choices[0].finish_reason == "tool_calls"
        assert answer.choices[0].message.content == "Let me check."
        tool_calls = answer.choices[0].message.tool_calls
        assert tool_calls and tool_calls[0].type == "function"
        call = tool_calls[0]
        call_id, name, arguments = call.id, call.function.name, call.function.arguments
        assert (await providers.last_request("anthropic"))["tool_choice"] == {"type": "any"}
    assert name == "get_weather" and json.loads(arguments) == {"location": "Paris"}
    assert (await providers.last_request("anthropic"))["tools"][0]["input_schema"]["properties"] == {
        "location": {"type": "string"}
    }
    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}],
        },
        {"role": "tool", "tool_call_id": call_id, "content": "18C, sunny"},
    ]
    final = await client.chat.completions.create(model=SONNET, messages=messages, tools=TOOLS)
    assert final.choices[0].message.content == "It is 18 degrees in Paris."
    sent = (await providers.last_request("anthropic"))["messages"]
    assert sent[1]["content"][0] == {
        "type": "tool_use",
        "id": call_id,
        "name": "get_weather",
        "input": {"location": "Paris"},
    }
    assert sent[2]["content"] == [{"type": "tool_result", "tool_use_id": call_id, "content": "18C, sunny"}]


async def test_anthropic_errors_map_to_openai_errors(providers: Providers) -> None:
    overloaded = await providers.post(
        {"model": "anthropic/claude-overloaded", "messages": [{"role": "user", "content": "x"}]}
    )
    assert overloaded.status_code == 502 and "Overloaded" in error_of(overloaded)["message"]
    embeddings = await providers.post({"model": SONNET, "input": "x"}, "embeddings")
    assert embeddings.status_code == 400 and error_of(embeddings)["code"] == "unsupported_endpoint"
    n = await providers.post({"model": SONNET, "n": 2, "messages": [{"role": "user", "content": "x"}]})
    assert n.status_code == 400 and error_of(n)["param"] == "n"


# OpenAI-compatible --------------------------------------------------------------------------------------------


async def test_openai_chat_stream_and_embeddings(client: openai.AsyncOpenAI) -> None:
    answer = await client.chat.completions.create(
        model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.choices[0].message.content == "Echo from gpt-4o-mini: hi"
    stream = await client.chat.completions.create(
        model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "a b c"}], stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Echo from gpt-4o-mini: a b c"
    vectors = await client.embeddings.create(model="openai/text-embedding-3-small", input=["one", "two"], dimensions=3)
    assert [d.embedding for d in vectors.data] == [[0.1] * 3, [0.2] * 3] and vectors.usage.prompt_tokens == 2


async def test_any_openai_compatible_server_by_name(client: openai.AsyncOpenAI) -> None:
    answer = await client.chat.completions.create(
        model=f"llamacpp/{SERVED}", messages=[{"role": "user", "content": "x"}]
    )
    assert answer.choices[0].message.content
    vectors = await client.embeddings.create(model=f"llamacpp/{EMBEDDER}", input="hello")
    assert len(vectors.data[0].embedding) == 384


async def test_models_list_offers_configured_providers_only(client: openai.AsyncOpenAI) -> None:
    models = [m async for m in client.models.list()]
    ids = {m.id for m in models}
    assert {"openai/gpt-4o-mini", SONNET, f"llamacpp/{SERVED}", "broken/down"} <= ids
    assert not any(i.startswith("vault/") for i in ids)
    assert all(m.model_dump()["permission"] == [] for m in models)  # as the seeds' API reference lists them


async def test_provider_without_credentials_says_what_is_missing(providers: Providers) -> None:
    resp = await providers.post({"model": "vault/gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})
    assert resp.status_code == 404 and error_of(resp)["code"] == "provider_not_configured"
    assert "IIR_TEST_VAULT_KEY_UNSET" in error_of(resp)["message"]


async def test_upstream_client_errors_pass_through(providers: Providers) -> None:
    resp = await providers.post({"model": "openai/gpt-bad", "messages": [{"role": "user", "content": "x"}]})
    assert resp.status_code == 400 and "string too long" in error_of(resp)["message"]


# Robustness ---------------------------------------------------------------------------------------------------


async def test_retries_on_5xx_then_succeeds(providers: Providers) -> None:
    user = uuid.uuid4().hex
    resp = await providers.post(
        {"model": "openai/gpt-flaky", "user": user, "messages": [{"role": "user", "content": "x"}]}
    )
    assert resp.status_code == 200 and (await providers.calls("openai"))[f"gpt-flaky|{user}"] == 3


async def test_failing_model_falls_back_and_says_who_answered(providers: Providers) -> None:
    user = uuid.uuid4().hex
    resp = await providers.post(
        {"model": "openai/gpt-500", "user": user, "messages": [{"role": "user", "content": "x"}]}
    )
    assert resp.status_code == 200 and resp.headers["x-iir-model"] == SONNET
    assert (await providers.calls("openai"))[f"gpt-500|{user}"] == 3  # the first try and two retries
    stream = await providers.post(
        {"model": "openai/gpt-500", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    )
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in sse_events(stream) if e["choices"])
    assert stream.headers["x-iir-model"] == SONNET and text == "Claude heard: x"


async def test_upstream_429_passes_its_headers_and_never_opens_the_circuit(providers: Providers) -> None:
    for _ in range(6):  # more than the circuit's failure threshold: rate limiting is not failure
        resp = await providers.post({"model": "openai/gpt-429", "messages": [{"role": "user", "content": "x"}]})
        assert resp.status_code == 429 and error_of(resp)["code"] == "upstream_rate_limited"
    assert resp.headers["retry-after"] == "0" and resp.headers["x-ratelimit-remaining-requests"] == "0"
    assert resp.headers["x-ratelimit-limit-requests"] == "60"


async def test_an_upstream_4xx_keeps_its_error_fields(providers: Providers) -> None:
    resp = await providers.post({"model": "openai/gpt-bad", "messages": [{"role": "user", "content": "x"}]})
    assert resp.status_code == 400
    assert error_of(resp) == {
        "message": "Invalid 'messages[0].content': string too long.",
        "type": "invalid_request_error",
        "param": None,
        "code": "string_above_max_length",
    }


@pytest.mark.parametrize("stream", [False, True])
async def test_hanging_upstream_times_out_with_504(providers: Providers, stream: bool) -> None:
    start = time.monotonic()
    resp = await providers.post(
        {"model": "openai/gpt-hang", "stream": stream, "messages": [{"role": "user", "content": "x"}]}
    )
    assert resp.status_code == 504 and error_of(resp)["code"] == "upstream_timeout"
    assert time.monotonic() - start < 5  # the provider's own timeouts, not the gateway's defaults


async def test_upstream_dying_mid_stream_ends_the_stream_with_an_error(providers: Providers) -> None:
    resp = await providers.post(
        {"model": "openai/gpt-die", "stream": True, "messages": [{"role": "user", "content": "a b c d e"}]}
    )
    assert resp.status_code == 200
    events = [line[6:] for line in resp.text.splitlines() if line.startswith("data: ")]
    assert json.loads(events[-1])["error"]["code"] == "upstream_error"
    died = await providers.post({"model": "openai/gpt-die", "messages": [{"role": "user", "content": "x"}]})
    assert died.status_code == 502


async def test_circuit_opens_on_a_failing_upstream_and_fallbacks_take_over(providers: Providers) -> None:
    body = {"messages": [{"role": "user", "content": "x"}]}
    for _ in range(3):
        failed = await providers.post({**body, "model": "broken/down-alone"})
        assert failed.status_code == 502 and error_of(failed)["code"] == "upstream_unreachable"
    skipped = await providers.post({**body, "model": "broken/down-alone"})
    assert skipped.status_code == 503 and error_of(skipped)["code"] == "upstream_circuit_open"
    assert int(skipped.headers["retry-after"]) >= 1
    covered = await providers.post({**body, "model": "broken/down"})
    assert covered.status_code == 200 and covered.headers["x-iir-model"] == "openai/gpt-4o-mini"


async def test_credentials_never_reach_the_logs(providers: Providers, client: openai.AsyncOpenAI) -> None:
    await client.chat.completions.create(model=SONNET, messages=[{"role": "user", "content": "x"}])
    log = providers.log.getvalue()
    assert log and OPENAI_KEY not in log and ANTHROPIC_KEY not in log


# Secret scrubbing -------------------------------------------------------------------------------------------


async def test_secrets_are_redacted_before_the_upstream_sees_them(providers: Providers) -> None:
    secret = "ghp_" + "x1" * 18
    resp = await providers.post(
        {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": f"fix {secret}"}]}
    )
    assert resp.status_code == 200 and resp.headers["x-iir-scrubbed"] == "github_token"
    assert secret not in json.dumps(await providers.last_request("openai"))
    assert resp.json()["choices"][0]["message"]["content"] == "Echo from gpt-4o-mini: fix REDACTED"


async def test_secrets_in_answers_are_redacted_streaming_or_not(providers: Providers) -> None:
    body = {"model": "openai/gpt-leaky", "messages": [{"role": "user", "content": "hi"}]}
    resp = await providers.post(body)
    assert "AKIA" not in resp.text and "REDACTED" in resp.text and resp.headers["x-iir-scrubbed"] == "aws_access_key"
    streamed = await providers.post({**body, "stream": True})
    assert streamed.status_code == 200 and "AKIAIOSFODNN7EXAMPLE" not in streamed.text.replace('"}', "")


async def make_key(providers: Providers, **settings: Any) -> str:
    made = await providers.gateway.client.post("/api/v1/apikeys", json=settings)  # admin: the client is on loopback
    return str(made.json()["key"])


async def test_scrub_mode_per_key(providers: Providers) -> None:
    blocking = await make_key(providers, name="blocks", scrub_mode="block")
    secret = "AKIAIOSFODNN7EXAMPLE"
    body = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": f"key {secret}"}]}
    blocked = await providers.post(body, Authorization=f"Bearer {blocking}")
    assert blocked.status_code == 400 and error_of(blocked)["code"] == "secret_detected"
    assert "aws_access_key" in error_of(blocked)["message"] and secret not in blocked.text
    trusting = await make_key(providers, name="trusts", scrub_mode="off")
    passed = await providers.post(body, Authorization=f"Bearer {trusting}")
    assert passed.status_code == 200 and secret in passed.text and "x-iir-scrubbed" not in passed.headers


async def test_the_messages_api_to_an_anthropic_model(providers: Providers) -> None:
    async with anthropic_sdk(providers.gateway, STATIC_KEY) as client:
        message = await client.messages.create(
            model=SONNET,
            max_tokens=50,
            system="Be brief.",
            stop_sequences=["you"],
            messages=[{"role": "user", "content": "How are you?"}],
        )
        assert _text(message.content[0]) == "Claude heard: How are "
        assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "you")
        sent = await providers.last_request("anthropic")
        # The client's own request went to Anthropic (the gateway's key, the upstream's model name).
        assert sent["system"] == "Be brief." and sent["messages"] == [{"role": "user", "content": "How are you?"}]
        assert sent["model"] == "claude-sonnet-4-5" and sent["stop_sequences"] == ["you"]
        await client.messages.create(
            model=SONNET,
            max_tokens=5,
            messages=[{"role": "user", "content": "x"}],
            extra_body={"mcp_servers": [{"type": "url", "url": "https://evil.example", "name": "e"}], "container": "c"},
        )
        sent = await providers.last_request("anthropic")
        assert "mcp_servers" not in sent  # nothing runs on the gateway's account unasked
        assert "container" not in sent
        tool: ToolParam = {
            "name": "get_weather",
            "description": "",
            "input_schema": {"type": "object", "properties": {}},
        }
        asked: list[MessageParam] = [{"role": "user", "content": "What is the weather?"}]
        async with client.messages.stream(model=SONNET, max_tokens=50, tools=[tool], messages=asked) as stream:
            called = await stream.get_final_message()
        use = next(b for b in called.content if b.type == "tool_use")
        assert called.stop_reason == "tool_use" and use.input == {"location": "Paris"}
        result: MessageParam = {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18"}],
        }
        answered = await client.messages.create(
            model=SONNET,
            max_tokens=50,
            tools=[tool],
            messages=[*asked, {"role": "assistant", "content": called.content}, result],
        )
        assert _text(answered.content[0]) == "It is 18 degrees in Paris."


async def test_the_messages_api_to_an_openai_model(providers: Providers) -> None:
    async with anthropic_sdk(providers.gateway, STATIC_KEY) as client:
        message = await client.messages.create(
            model="openai/gpt-4o-mini", max_tokens=20, messages=[{"role": "user", "content": "a b c"}]
        )
    assert _text(message.content[0]) == "Echo from gpt-4o-mini: a b c"
    assert message.stop_reason == "end_turn" and message.usage.output_tokens > 0


async def test_the_responses_api_to_an_anthropic_model(client: openai.AsyncOpenAI, providers: Providers) -> None:
    response = await client.responses.create(
        model=SONNET, instructions="Be brief.", input="How are you?", max_output_tokens=50
    )
    assert response.output_text == "Claude heard: How are you?" and response.status == "completed"
    sent = await providers.last_request("anthropic")
    assert sent["system"] == "Be brief." and sent["max_tokens"] == 50
    tool: FunctionToolParam = {
        "type": "function",
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {}},
        "strict": None,
    }
    called = await client.responses.create(model=SONNET, input="What is the weather?", tools=[tool])
    call = next(item for item in called.output if item.type == "function_call")
    answered = await client.responses.create(
        model=SONNET,
        previous_response_id=called.id,
        tools=[tool],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18"}],
    )
    assert answered.output_text == "It is 18 degrees in Paris."


async def stream_messages(providers: Providers, key: str, model: str, content: str) -> str:
    body = {"model": model, "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": content}]}
    async with providers.gateway.client.stream("POST", "/v1/messages", headers={"x-api-key": key}, json=body) as resp:
        return (await resp.aread()).decode()


async def test_an_anthropic_answer_reaches_an_anthropic_client_untouched(providers: Providers) -> None:
    """With nothing in the gateway to change the answer (scrubbing off for the key), Anthropic's own
    events and body pass as they came: here the upstream's model name, which a translation replaces."""
    made = await providers.gateway.client.post(
        "/api/v1/apikeys",
        json={"name": "native", "scrub_mode": "off"},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
    )
    key = str(made.json()["key"])
    async with anthropic_sdk(providers.gateway, key) as client:
        whole = await client.messages.create(model=SONNET, max_tokens=50, messages=[{"role": "user", "content": "Hi"}])
    assert whole.model == "claude-sonnet-4-5" and _text(whole.content[0]) == "Claude heard: Hi"
    body = await stream_messages(providers, key, SONNET, "Hi")
    assert '"model":"claude-sonnet-4-5"' in body.replace(" ", "") and "event: message_stop" in body
    # A stream that breaks off ends with Anthropic's error event, untouched mode or not.
    broken = await stream_messages(providers, key, "anthropic/claude-die", "a b c d e f")
    assert "event: message_start" in broken and "event: error" in broken and "message_stop" not in broken
    # Scrubbed keys get the translation back (the scrubber works on it): the public model name.
    async with anthropic_sdk(providers.gateway, STATIC_KEY) as scrubbed:
        message = await scrubbed.messages.create(
            model=SONNET, max_tokens=50, messages=[{"role": "user", "content": "Hi"}]
        )
    assert message.model == SONNET
