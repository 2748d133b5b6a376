"""External providers through a real gateway: OpenAI-compatible and Anthropic fakes speaking the real wire
formats, retries, fallbacks, timeouts, the circuit breaker, credentials."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from anthropic.types import MessageParam, TextBlock, ToolParam
from openai.types.chat import ChatCompletionFunctionToolParam, ChatCompletionMessageParam
from openai.types.responses import FunctionToolParam

from iir_dev import datastores
from iir_dev.stack import REPO, Stack, http_ok
from tests.conftest import EMBEDDER, MASTER_KEY, SERVED, STATIC_KEY
from tests.json_values import json_object
from tests.waiting import wait_for

OPENAI_KEY = "sk-test-" + uuid.uuid4().hex
ANTHROPIC_KEY = "sk-ant-test-" + uuid.uuid4().hex
HEADERS = {"Authorization": f"Bearer {STATIC_KEY}"}
SONNET = "anthropic/claude-sonnet-4-5"


def start_fake(module: str, key: str) -> tuple[subprocess.Popen[bytes], str]:
    port = datastores.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", f"tests.fakes.{module}", "--port", str(port), "--key", key],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    if wait_for(lambda: http_ok(f"{url}/_calls"), timeout=10, interval=0.1):
        return proc, url
    proc.kill()
    raise RuntimeError(f"fake {module} did not start")


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, str]]:
    oa, oa_url = start_fake("openai_api", OPENAI_KEY)
    an, an_url = start_fake("anthropic_api", ANTHROPIC_KEY)
    yield {"openai": oa_url, "anthropic": an_url}
    for proc in (oa, an):
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def gateway(stack: Stack, fakes: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    work = tmp_path_factory.mktemp("providers")
    key_file = work / "anthropic-key"
    key_file.write_text(ANTHROPIC_KEY + "\n")  # as a mounted Secret
    providers = {
        "providers": {
            "openai": {
                "base_url": f"{fakes['openai']}/v1",
                "timeouts": {"first_token_s": 1, "total_s": 1.5},
                "models": {"gpt-4o-mini": {}, "text-embedding-3-small": {}, "gpt-500": {"fallbacks": [SONNET]}},
            },
            "anthropic": {
                "base_url": fakes["anthropic"],
                "api_key_file": str(key_file),
                "models": ["claude-sonnet-4-5", "claude-overloaded", "claude-die"],
            },
            "broken": {
                "base_url": f"http://127.0.0.1:{datastores.free_port()}/v1",
                "api_key_required": False,
                "retries": 0,
                "models": {"down": {"fallbacks": ["openai/gpt-4o-mini"]}, "down-alone": {}},
            },
            "vault": {
                "base_url": f"{fakes['openai']}/v1",
                "api_key_env": "IIR_TEST_VAULT_KEY_UNSET",
                "models": ["gpt-4o-mini"],
            },
            "llamacpp": {"base_url": f"{stack.sim_url}/v1", "api_key_required": False, "models": [SERVED, EMBEDDER]},
        }
    }
    path = work / "providers.yaml"
    path.write_text(yaml.safe_dump(providers))
    return stack.start_gateway_replica(
        "gateway-providers",
        env={"IIR_PROVIDERS_FILE": str(path), "OPENAI_API_KEY": OPENAI_KEY, "IIR_UPSTREAM_READ_TIMEOUT_S": "5"},
    )


@pytest.fixture(scope="module")
def client(gateway: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway}/v1", api_key=STATIC_KEY, max_retries=0, timeout=20)


def last_request(fakes: dict[str, str], name: str) -> dict[str, Any]:
    return json_object(httpx.get(f"{fakes[name]}/_last").json())


def calls(fakes: dict[str, str], name: str) -> dict[str, int]:
    return {str(model): int(n) for model, n in json_object(httpx.get(f"{fakes[name]}/_calls").json()).items()}


def post(gateway: str, body: dict[str, Any], path: str = "chat/completions") -> httpx.Response:
    return httpx.post(f"{gateway}/v1/{path}", json=body, headers=HEADERS, timeout=20)


def error_of(resp: httpx.Response) -> dict[str, Any]:
    return json_object(resp.json()["error"])


# Anthropic ----------------------------------------------------------------------------------------------------


def test_anthropic_through_the_openai_sdk(client: openai.OpenAI, fakes: dict[str, str]) -> None:
    raw = client.chat.completions.with_raw_response.create(
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
    sent = last_request(fakes, "anthropic")
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


def sent_tokens(sent: dict[str, Any]) -> int:
    return max(1, len(sent.get("system", "").split())) + sum(
        max(1, len(str(m["content"]).split())) for m in sent["messages"]
    )


def test_anthropic_streaming_is_translated_chunk_by_chunk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=SONNET,
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Stream this please"}],
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Claude heard: Stream this please"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 3  # not buffered into one
    # Without include_usage, no usage chunk.
    plain = list(
        client.chat.completions.create(model=SONNET, stream=True, messages=[{"role": "user", "content": "hi"}])
    )
    assert all(c.choices for c in plain)


def test_anthropic_max_tokens_gives_length(client: openai.OpenAI, fakes: dict[str, str]) -> None:
    answer = client.chat.completions.create(model=SONNET, max_tokens=2, messages=[{"role": "user", "content": "a b c"}])
    assert answer.choices[0].finish_reason == "length" and answer.choices[0].message.content == "Claude heard:"
    default = client.chat.completions.create(model=SONNET, messages=[{"role": "user", "content": "x"}])
    assert default.choices[0].finish_reason == "stop" and last_request(fakes, "anthropic")["max_tokens"] == 4096


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
def test_anthropic_tool_calls_round_trip(client: openai.OpenAI, fakes: dict[str, str], stream: bool) -> None:
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is the weather in Paris?"}]
    if stream:
        chunks = list(
            client.chat.completions.create(
                model=SONNET, messages=messages, tools=TOOLS, tool_choice="auto", stream=True
            )
        )
        calls_ = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
        first = calls_[0]
        assert first.id is not None and first.function is not None and first.function.name is not None
        call_id, name = first.id, first.function.name
        arguments = "".join(tc.function.arguments or "" for tc in calls_ if tc.function)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finish == ["tool_calls"] and all(tc.index == 0 for tc in calls_)
    else:
        answer = client.chat.completions.create(model=SONNET, messages=messages, tools=TOOLS, tool_choice="required")
        assert answer.choices[0].finish_reason == "tool_calls"
        assert answer.choices[0].message.content == "Let me check."
        tool_calls = answer.choices[0].message.tool_calls
        assert tool_calls and tool_calls[0].type == "function"
        call = tool_calls[0]
        call_id, name, arguments = call.id, call.function.name, call.function.arguments
        assert last_request(fakes, "anthropic")["tool_choice"] == {"type": "any"}
    assert name == "get_weather" and json.loads(arguments) == {"location": "Paris"}
    assert last_request(fakes, "anthropic")["tools"][0]["input_schema"]["properties"] == {
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
    final = client.chat.completions.create(model=SONNET, messages=messages, tools=TOOLS)
    assert final.choices[0].message.content == "It is 18 degrees in Paris."
    sent = last_request(fakes, "anthropic")["messages"]
    assert sent[1]["content"][0] == {
        "type": "tool_use",
        "id": call_id,
        "name": "get_weather",
        "input": {"location": "Paris"},
    }
    assert sent[2]["content"] == [{"type": "tool_result", "tool_use_id": call_id, "content": "18C, sunny"}]


def test_anthropic_errors_map_to_openai_errors(gateway: str) -> None:
    overloaded = post(gateway, {"model": "anthropic/claude-overloaded", "messages": [{"role": "user", "content": "x"}]})
    assert overloaded.status_code == 502 and "Overloaded" in error_of(overloaded)["message"]
    embeddings = post(gateway, {"model": SONNET, "input": "x"}, "embeddings")
    assert embeddings.status_code == 400 and error_of(embeddings)["code"] == "unsupported_endpoint"
    n = post(gateway, {"model": SONNET, "n": 2, "messages": [{"role": "user", "content": "x"}]})
    assert n.status_code == 400 and error_of(n)["param"] == "n"


# OpenAI-compatible --------------------------------------------------------------------------------------------


def test_openai_chat_stream_and_embeddings(client: openai.OpenAI, fakes: dict[str, str]) -> None:
    answer = client.chat.completions.create(model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "Echo from gpt-4o-mini: hi"
    text = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "a b c"}], stream=True
        )
        if c.choices
    )
    assert text == "Echo from gpt-4o-mini: a b c"
    vectors = client.embeddings.create(model="openai/text-embedding-3-small", input=["one", "two"], dimensions=3)
    assert [d.embedding for d in vectors.data] == [[0.1] * 3, [0.2] * 3] and vectors.usage.prompt_tokens == 2


def test_any_openai_compatible_server_by_name(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model=f"llamacpp/{SERVED}", messages=[{"role": "user", "content": "x"}])
    assert answer.choices[0].message.content
    vectors = client.embeddings.create(model=f"llamacpp/{EMBEDDER}", input="hello")
    assert len(vectors.data[0].embedding) == 384


def test_local_embeddings(stack: Stack) -> None:
    resp = post(stack.gateway_url, {"model": f"local/{EMBEDDER}", "input": ["a", "b"]}, "embeddings")
    assert resp.status_code == 200 and [d["index"] for d in resp.json()["data"]] == [0, 1]


def test_models_list_offers_configured_providers_only(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"openai/gpt-4o-mini", SONNET, f"llamacpp/{SERVED}", "broken/down"} <= ids
    assert not any(i.startswith("vault/") for i in ids)


def test_provider_without_credentials_says_what_is_missing(gateway: str) -> None:
    resp = post(gateway, {"model": "vault/gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})
    assert resp.status_code == 404 and error_of(resp)["code"] == "provider_not_configured"
    assert "IIR_TEST_VAULT_KEY_UNSET" in error_of(resp)["message"]


def test_upstream_client_errors_pass_through(gateway: str) -> None:
    resp = post(gateway, {"model": "openai/gpt-bad", "messages": [{"role": "user", "content": "x"}]})
    assert resp.status_code == 400 and "string too long" in error_of(resp)["message"]


# Robustness ---------------------------------------------------------------------------------------------------


def test_retries_on_5xx_then_succeeds(gateway: str, fakes: dict[str, str]) -> None:
    user = uuid.uuid4().hex
    resp = post(gateway, {"model": "openai/gpt-flaky", "user": user, "messages": [{"role": "user", "content": "x"}]})
    assert resp.status_code == 200 and calls(fakes, "openai")[f"gpt-flaky|{user}"] == 3


def test_failing_model_falls_back_and_says_who_answered(gateway: str, fakes: dict[str, str]) -> None:
    user = uuid.uuid4().hex
    resp = post(gateway, {"model": "openai/gpt-500", "user": user, "messages": [{"role": "user", "content": "x"}]})
    assert resp.status_code == 200 and resp.headers["x-iir-model"] == SONNET
    assert calls(fakes, "openai")[f"gpt-500|{user}"] == 3  # the first try and two retries
    stream = httpx.post(
        f"{gateway}/v1/chat/completions",
        headers=HEADERS,
        timeout=20,
        json={"model": "openai/gpt-500", "stream": True, "messages": [{"role": "user", "content": "x"}]},
    )
    events = [json.loads(line[6:]) for line in stream.text.splitlines() if line.startswith("data: {")]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert stream.headers["x-iir-model"] == SONNET and text == "Claude heard: x"


def test_upstream_429_passes_its_headers_and_never_opens_the_circuit(gateway: str) -> None:
    for _ in range(6):  # more than the circuit's failure threshold: rate limiting is not failure
        resp = post(gateway, {"model": "openai/gpt-429", "messages": [{"role": "user", "content": "x"}]})
        assert resp.status_code == 429 and error_of(resp)["code"] == "upstream_rate_limited"
    assert resp.headers["retry-after"] == "0" and resp.headers["x-ratelimit-remaining-requests"] == "0"
    assert resp.headers["x-ratelimit-limit-requests"] == "60"


def test_an_upstream_4xx_keeps_its_error_fields(gateway: str) -> None:
    resp = post(gateway, {"model": "openai/gpt-bad", "messages": [{"role": "user", "content": "x"}]})
    assert resp.status_code == 400
    assert error_of(resp) == {
        "message": "Invalid 'messages[0].content': string too long.",
        "type": "invalid_request_error",
        "param": None,
        "code": "string_above_max_length",
    }


@pytest.mark.parametrize("stream", [False, True])
def test_hanging_upstream_times_out_with_504(gateway: str, stream: bool) -> None:
    start = time.monotonic()
    resp = post(gateway, {"model": "openai/gpt-hang", "stream": stream, "messages": [{"role": "user", "content": "x"}]})
    assert resp.status_code == 504 and error_of(resp)["code"] == "upstream_timeout"
    assert time.monotonic() - start < 5  # the provider's own timeouts, not the gateway's defaults


def test_upstream_dying_mid_stream_ends_the_stream_with_an_error(gateway: str) -> None:
    resp = httpx.post(
        f"{gateway}/v1/chat/completions",
        headers=HEADERS,
        timeout=20,
        json={"model": "openai/gpt-die", "stream": True, "messages": [{"role": "user", "content": "a b c d e"}]},
    )
    assert resp.status_code == 200
    events = [line[6:] for line in resp.text.splitlines() if line.startswith("data: ")]
    assert json.loads(events[-1])["error"]["code"] == "upstream_error"
    died = post(gateway, {"model": "openai/gpt-die", "messages": [{"role": "user", "content": "x"}]})
    assert died.status_code == 502


def test_circuit_opens_on_a_failing_upstream_and_fallbacks_take_over(gateway: str) -> None:
    body = {"messages": [{"role": "user", "content": "x"}]}
    for _ in range(3):
        failed = post(gateway, {**body, "model": "broken/down-alone"})
        assert failed.status_code == 502 and error_of(failed)["code"] == "upstream_unreachable"
    skipped = post(gateway, {**body, "model": "broken/down-alone"})
    assert skipped.status_code == 503 and error_of(skipped)["code"] == "upstream_circuit_open"
    assert int(skipped.headers["retry-after"]) >= 1
    covered = post(gateway, {**body, "model": "broken/down"})
    assert covered.status_code == 200 and covered.headers["x-iir-model"] == "openai/gpt-4o-mini"


def test_local_model_falls_back_to_another_local_model(stack: Stack) -> None:
    body = {"model": "local/dead-with-fallback", "messages": [{"role": "user", "content": "x"}]}
    resp = post(stack.gateway_url, body)
    assert resp.status_code == 200 and resp.headers["x-iir-model"] == f"local/{SERVED}"


def test_credentials_never_reach_the_logs(gateway: str, stack: Stack, client: openai.OpenAI) -> None:
    client.chat.completions.create(model=SONNET, messages=[{"role": "user", "content": "x"}])
    log = stack.processes["gateway-providers"].log_path.read_text()
    assert OPENAI_KEY not in log and ANTHROPIC_KEY not in log


def test_a_bad_providers_file_stops_the_gateway_with_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "providers.yaml"
    bad.write_text("providers:\n  openai:\n    base_url: ftp://nowhere\n")
    proc = subprocess.run(
        [sys.executable, "-m", "iir_gateway"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "IIR_PROVIDERS_FILE": str(bad)},
        timeout=30,
    )
    assert proc.returncode == 1
    assert "providers.openai.base_url" in proc.stderr and "Traceback" not in proc.stderr


# Secret scrubbing -------------------------------------------------------------------------------------------


def test_secrets_are_redacted_before_the_upstream_sees_them(gateway: str, fakes: dict[str, str]) -> None:
    secret = "ghp_" + "x1" * 18
    resp = post(gateway, {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": f"fix {secret}"}]})
    assert resp.status_code == 200 and resp.headers["x-iir-scrubbed"] == "github_token"
    assert secret not in json.dumps(last_request(fakes, "openai"))
    assert resp.json()["choices"][0]["message"]["content"] == "Echo from gpt-4o-mini: fix REDACTED"


def test_secrets_in_answers_are_redacted_streaming_or_not(gateway: str) -> None:
    body = {"model": "openai/gpt-leaky", "messages": [{"role": "user", "content": "hi"}]}
    resp = post(gateway, body)
    assert "AKIA" not in resp.text and "REDACTED" in resp.text and resp.headers["x-iir-scrubbed"] == "aws_access_key"
    streamed = post(gateway, {**body, "stream": True})
    assert streamed.status_code == 200 and "AKIAIOSFODNN7EXAMPLE" not in streamed.text.replace('"}', "")


def test_scrub_mode_per_key(stack: Stack, gateway: str, fakes: dict[str, str]) -> None:
    blocking = httpx.post(f"{stack.gateway_url}/api/v1/apikeys", json={"name": "blocks", "scrub_mode": "block"}).json()
    secret = "AKIAIOSFODNN7EXAMPLE"
    body = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": f"key {secret}"}]}
    blocked = httpx.post(
        f"{gateway}/v1/chat/completions", json=body, timeout=20, headers={"Authorization": f"Bearer {blocking['key']}"}
    )
    assert blocked.status_code == 400 and error_of(blocked)["code"] == "secret_detected"
    assert "aws_access_key" in error_of(blocked)["message"] and secret not in blocked.text
    trusting = httpx.post(f"{stack.gateway_url}/api/v1/apikeys", json={"name": "trusts", "scrub_mode": "off"}).json()
    passed = httpx.post(
        f"{gateway}/v1/chat/completions", json=body, timeout=20, headers={"Authorization": f"Bearer {trusting['key']}"}
    )
    assert passed.status_code == 200 and secret in passed.text and "x-iir-scrubbed" not in passed.headers


def test_the_messages_api_to_an_anthropic_model(gateway: str, fakes: dict[str, str]) -> None:
    import anthropic

    client = anthropic.Anthropic(base_url=gateway, api_key=STATIC_KEY, max_retries=0)
    message = client.messages.create(
        model=SONNET,
        max_tokens=50,
        system="Be brief.",
        stop_sequences=["you"],
        messages=[{"role": "user", "content": "How are you?"}],
    )
    assert _text(message.content[0]) == "Claude heard: How are "
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "you")
    sent = last_request(fakes, "anthropic")
    # The client's own request went to Anthropic (the gateway's key, the upstream's model name).
    assert sent["system"] == "Be brief." and sent["messages"] == [{"role": "user", "content": "How are you?"}]
    assert sent["model"] == "claude-sonnet-4-5" and sent["stop_sequences"] == ["you"]
    client.messages.create(
        model=SONNET,
        max_tokens=5,
        messages=[{"role": "user", "content": "x"}],
        extra_body={"mcp_servers": [{"type": "url", "url": "https://evil.example", "name": "e"}], "container": "c"},
    )
    assert "mcp_servers" not in last_request(fakes, "anthropic")  # nothing runs on the gateway's account unasked
    assert "container" not in last_request(fakes, "anthropic")
    tool: ToolParam = {"name": "get_weather", "description": "", "input_schema": {"type": "object", "properties": {}}}
    asked: list[MessageParam] = [{"role": "user", "content": "What is the weather?"}]
    with client.messages.stream(model=SONNET, max_tokens=50, tools=[tool], messages=asked) as stream:
        called = stream.get_final_message()
    use = next(b for b in called.content if b.type == "tool_use")
    assert called.stop_reason == "tool_use" and use.input == {"location": "Paris"}
    result: MessageParam = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18"}],
    }
    answered = client.messages.create(
        model=SONNET,
        max_tokens=50,
        tools=[tool],
        messages=[*asked, {"role": "assistant", "content": called.content}, result],
    )
    assert _text(answered.content[0]) == "It is 18 degrees in Paris."


def test_the_messages_api_to_an_openai_model(gateway: str) -> None:
    import anthropic

    client = anthropic.Anthropic(base_url=gateway, api_key=STATIC_KEY, max_retries=0)
    message = client.messages.create(
        model="openai/gpt-4o-mini", max_tokens=20, messages=[{"role": "user", "content": "a b c"}]
    )
    assert _text(message.content[0]) == "Echo from gpt-4o-mini: a b c"
    assert message.stop_reason == "end_turn" and message.usage.output_tokens > 0


def test_the_responses_api_to_an_anthropic_model(client: openai.OpenAI, fakes: dict[str, str]) -> None:
    response = client.responses.create(
        model=SONNET, instructions="Be brief.", input="How are you?", max_output_tokens=50
    )
    assert response.output_text == "Claude heard: How are you?" and response.status == "completed"
    sent = last_request(fakes, "anthropic")
    assert sent["system"] == "Be brief." and sent["max_tokens"] == 50
    tool: FunctionToolParam = {
        "type": "function",
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {}},
        "strict": None,
    }
    called = client.responses.create(model=SONNET, input="What is the weather?", tools=[tool])
    call = next(item for item in called.output if item.type == "function_call")
    answered = client.responses.create(
        model=SONNET,
        previous_response_id=called.id,
        tools=[tool],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18"}],
    )
    assert answered.output_text == "It is 18 degrees in Paris."


def test_an_anthropic_answer_reaches_an_anthropic_client_untouched(gateway: str, fakes: dict[str, str]) -> None:
    """With nothing in the gateway to change the answer (scrubbing off for the key), Anthropic's own
    events and body pass as they came: here the upstream's model name, which a translation replaces."""
    import anthropic

    made = httpx.post(
        f"{gateway}/api/v1/apikeys",
        json={"name": "native", "scrub_mode": "off"},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
    ).json()
    client = anthropic.Anthropic(base_url=gateway, api_key=made["key"], max_retries=0)
    whole = client.messages.create(model=SONNET, max_tokens=50, messages=[{"role": "user", "content": "Hi"}])
    assert whole.model == "claude-sonnet-4-5" and _text(whole.content[0]) == "Claude heard: Hi"
    with httpx.stream(
        "POST",
        f"{gateway}/v1/messages",
        headers={"x-api-key": made["key"]},
        json={"model": SONNET, "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "Hi"}]},
    ) as resp:
        body = resp.read().decode()
    assert '"model":"claude-sonnet-4-5"' in body.replace(" ", "") and "event: message_stop" in body
    # A stream that breaks off ends with Anthropic's error event, untouched mode or not.
    with httpx.stream(
        "POST",
        f"{gateway}/v1/messages",
        headers={"x-api-key": made["key"]},
        json={
            "model": "anthropic/claude-die",
            "max_tokens": 50,
            "stream": True,
            "messages": [{"role": "user", "content": "a b c d e f"}],
        },
    ) as resp:
        broken = resp.read().decode()
    assert "event: message_start" in broken and "event: error" in broken and "message_stop" not in broken
    # Scrubbed keys get the translation back (the scrubber works on it): the public model name.
    scrubbed = anthropic.Anthropic(base_url=gateway, api_key=STATIC_KEY, max_retries=0)
    assert (
        scrubbed.messages.create(model=SONNET, max_tokens=50, messages=[{"role": "user", "content": "Hi"}]).model
        == SONNET
    )
