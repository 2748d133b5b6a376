"""Issue 29, findings 5 and 6: secrets in streamed tool-call arguments (spelled 1–6 characters per chunk)
never reach a chat, Responses or Messages client whole; what the gateway keeps of a request (a stored
Response, a batch input file, a batch's output) holds no secret, in Redis or as it is read back."""

from __future__ import annotations

import json
import secrets
import string
from collections import defaultdict
from typing import Any

import anthropic
import httpx
import openai
import pytest
import redis
from openai.types.responses import FunctionToolParam

from iir_dev.stack import Stack
from tests.fakes.openai_api import TOOL_SECRETS
from tests.waiting import wait_for

KINDS = ("github", "openai", "aws", "aws_secret", "jwt")
TOOL: FunctionToolParam = {
    "type": "function",
    "name": "lookup",
    "parameters": {"type": "object", "properties": {}},
    "strict": None,  # the gateway then asks the upstream for no strictness either way
}


def _leaks(kind: str, arguments: dict[Any, str]) -> list[str]:
    """What is wrong with each call's arguments as the client put them together: the secret whole,
    no redaction, or not JSON any more."""
    problems = []
    secret = TOOL_SECRETS[kind]
    for call, text in arguments.items():
        if secret in text or secret[6:] in text:
            problems.append(f"{kind} call {call}: secret whole in {text!r}")
        if "REDACTED" not in text:
            problems.append(f"{kind} call {call}: not redacted: {text!r}")
        try:
            json.loads(text)
        except ValueError:
            problems.append(f"{kind} call {call}: not JSON: {text!r}")
    if len(arguments) != 2:
        problems.append(f"{kind}: {len(arguments)} calls, not 2")
    return problems


def _chat(client: openai.OpenAI, model: str, kind: str) -> list[str]:
    stream = client.chat.completions.create(model=model, stream=True, messages=[{"role": "user", "content": kind}])
    arguments: dict[int, str] = defaultdict(str)
    for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                arguments[call.index] += (call.function.arguments if call.function else None) or ""
    return _leaks(kind, arguments)


def _responses(client: openai.OpenAI, model: str, kind: str) -> list[str]:
    stream = client.responses.create(model=model, input=kind, tools=[TOOL], stream=True, store=False)
    deltas: dict[str, str] = defaultdict(str)
    done: dict[str, str] = {}
    items: dict[str, str] = {}
    completed: dict[str, str] = {}
    for event in stream:
        if event.type == "response.function_call_arguments.delta":
            deltas[event.item_id] += event.delta
        elif event.type == "response.function_call_arguments.done":
            done[event.item_id] = event.arguments
        elif event.type == "response.output_item.done" and event.item.type == "function_call":
            items[str(event.item.id)] = event.item.arguments
        elif event.type == "response.completed":
            completed = {str(i.id): i.arguments for i in event.response.output if i.type == "function_call"}
    problems = _leaks(kind, deltas)
    for name, seen in (("function_call_arguments.done", done), ("output_item.done", items), ("completed", completed)):
        if seen != deltas:
            problems.append(f"{kind}: {name} differs from the deltas: {seen} vs {dict(deltas)}")
    return problems


def _messages(client: anthropic.Anthropic, model: str, kind: str) -> list[str]:
    tool = {"name": "lookup", "input_schema": {"type": "object", "properties": {}}}
    partial: dict[int, str] = defaultdict(str)
    with client.messages.stream(
        model=model,
        max_tokens=100,
        messages=[{"role": "user", "content": kind}],
        tools=[tool],  # type: ignore[list-item]
    ) as stream:
        for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                partial[event.index] += event.delta.partial_json
        final = stream.get_final_message()
    problems = _leaks(kind, partial)
    inputs = [json.dumps(block.input) for block in final.content if block.type == "tool_use"]
    if any(TOOL_SECRETS[kind] in text for text in inputs):
        problems.append(f"{kind}: the final message holds the secret: {inputs}")
    return problems


def test_streamed_tool_arguments_never_carry_a_secret_whole(chart_stack: Stack) -> None:
    """Finding 5: chat `delta.tool_calls[].function.arguments`, Responses `function_call_arguments.delta`
    (and `.done`, `output_item.done`, `response.completed`) and Messages `input_json_delta`, with the
    secret spelled 1 to 6 characters per chunk."""
    key = chart_stack.create_key("r3-tool-args")
    oa = openai.OpenAI(base_url=f"{chart_stack.gateway_url}/v1", api_key=key, max_retries=0)
    an = anthropic.Anthropic(base_url=chart_stack.gateway_url, api_key=key, max_retries=0)
    problems: list[str] = []
    for size in range(1, 7):
        model = f"openai/gpt-toolargs-{size}"
        for kind in KINDS:
            problems += [f"chat/{size}: {p}" for p in _chat(oa, model, kind)]
            problems += [f"responses/{size}: {p}" for p in _responses(oa, model, kind)]
            problems += [f"messages/{size}: {p}" for p in _messages(an, model, kind)]
    assert not problems, "\n".join(problems[:20])


def test_tool_arguments_of_whole_answers_are_scrubbed(chart_stack: Stack) -> None:
    """The same secrets in a non-streamed answer's tool calls (an AWS secret key inside JSON arguments
    was missed in the answer's raw bytes, where the arguments' quotes are escaped)."""
    key = chart_stack.create_key("r3-tool-args-whole")
    oa = openai.OpenAI(base_url=f"{chart_stack.gateway_url}/v1", api_key=key, max_retries=0)
    an = anthropic.Anthropic(base_url=chart_stack.gateway_url, api_key=key, max_retries=0)
    model = "openai/gpt-toolargs-1"
    problems: list[str] = []
    for kind in KINDS:
        chat = oa.chat.completions.create(model=model, messages=[{"role": "user", "content": kind}])
        calls = chat.choices[0].message.tool_calls or []
        problems += _leaks(kind, {i: c.function.arguments for i, c in enumerate(calls)})  # type: ignore[union-attr]
        response = oa.responses.create(model=model, input=kind, tools=[TOOL], store=False)
        problems += _leaks(kind, {i.id: i.arguments for i in response.output if i.type == "function_call"})
        message = an.messages.create(
            model=model,
            max_tokens=100,
            messages=[{"role": "user", "content": kind}],
            tools=[{"name": "lookup", "input_schema": {"type": "object", "properties": {}}}],
        )
        problems += _leaks(kind, {b.id: json.dumps(b.input) for b in message.content if b.type == "tool_use"})
    assert not problems, "\n".join(problems)


def _secret() -> str:
    """A GitHub token made for this test (so no other test's value can be mistaken for it)."""
    return "ghp_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(36))


def _raw(value: bytes | str | None) -> bytes:
    return value.encode() if isinstance(value, str) else value or b""


def _stored(stack: Stack) -> list[bytes]:
    """Every value under the stack's prefix, in its Redis and in the storage Redis if it has one."""
    prefix = stack.env["IIR_REDIS_PREFIX"]
    values: list[bytes] = []
    for url in {stack.redis_url, stack.env.get("IIR_STORAGE_REDIS_URL") or stack.redis_url}:
        r = redis.Redis.from_url(url)
        for name in r.scan_iter(f"{prefix}*"):
            kind = r.type(name)
            if kind == b"string":
                values.append(_raw(r.get(name)))
            elif kind == b"hash":
                values += map(_raw, r.hvals(name))
            elif kind == b"stream":
                values += [_raw(v) for _, fields in r.xrange(name) or [] for v in (fields or {}).values()]
            elif kind == b"list":
                values += map(_raw, r.lrange(name, 0, -1))
    return values


@pytest.mark.parametrize("stream", [False, True])
def test_stored_responses_keep_and_echo_no_secret(chart_stack: Stack, stream: bool) -> None:
    """Finding 6: a stored Response with a secret in its instructions, metadata, tool description and
    input items (message, function_call arguments and output): not in Redis, not in what is echoed."""
    secret = _secret()
    key = chart_stack.create_key("r3-stored-responses")
    headers = {"Authorization": f"Bearer {key}"}
    body = {
        "model": "openai/gpt-4o-mini",
        "store": True,
        "stream": stream,
        "instructions": f"Use the token {secret} when asked.",
        "metadata": {"note": secret},
        "tools": [{**TOOL, "description": f"calls with {secret}"}],
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": f"mine is {secret}"}]},
            {"type": "function_call", "call_id": "c1", "name": "lookup", "arguments": json.dumps({"t": secret})},
            {"type": "function_call_output", "call_id": "c1", "output": f"ok {secret}"},
            {"type": "message", "role": "user", "content": "and now?"},
        ],
    }
    url = f"{chart_stack.gateway_url}/v1/responses"
    with httpx.stream("POST", url, json=body, headers=headers, timeout=30) as resp:
        assert resp.status_code == 200, resp.read()
        created = resp.read().decode()
    assert "github_token" in resp.headers.get("x-iir-scrubbed", "")
    assert secret not in created and secret[4:] not in created
    if stream:
        completed = next(json.loads(line[6:]) for line in created.splitlines() if '"type":"response.completed"' in line)
        response_id = completed["response"]["id"]
    else:
        response_id = json.loads(created)["id"]
        assert "REDACTED" in json.loads(created)["instructions"]
    got = wait_for(
        lambda: (r := httpx.get(f"{url}/{response_id}", headers=headers)).status_code == 200 and r,
        timeout=10,
        what="the response stored",
    )
    items = httpx.get(f"{url}/{response_id}/input_items", headers=headers)
    assert items.status_code == 200
    for text in (got.text, items.text):
        assert secret not in text and secret[4:] not in text, text
    echoed = got.json()
    assert "REDACTED" in echoed["instructions"] and echoed["metadata"]["note"] == "REDACTED"
    assert "REDACTED" in echoed["tools"][0]["description"]
    assert len(items.json()["data"]) == 4
    # Raw, as Redis keeps it (the stack's prefix).
    stored = [v for v in _stored(chart_stack) if response_id.encode() in v]
    assert stored, "the response is not in Redis"
    assert not any(secret.encode() in v or secret[4:].encode() in v for v in _stored(chart_stack))


def test_batch_input_files_and_outputs_keep_no_secret(chart_stack: Stack) -> None:
    """Finding 6: a batch input file with a secret (in a message, the instructions and metadata of a
    Responses line, its custom_id, and a line that is not JSON): the stored file, its content as read
    back, the batch's output and error files and Redis hold none."""
    secret = _secret()
    key = chart_stack.create_key("r3-batch-files")
    headers = {"Authorization": f"Bearer {key}"}
    lines = [
        {
            "custom_id": "a",
            "method": "POST",
            "url": "/v1/responses",
            "body": {
                "model": "openai/gpt-4o-mini",
                "instructions": f"token {secret}",
                "metadata": {"k": secret},
                "input": f"say {secret}",
            },
        },
        {
            "custom_id": f"b-{secret}",
            "method": "POST",
            "url": "/v1/responses",
            "body": {"model": "openai/gpt-4o-mini", "input": "hello"},
        },
    ]
    content = "\n".join(json.dumps(line) for line in lines) + f"\nnot json {secret}\n"
    gw = chart_stack.gateway_url
    up = httpx.post(
        f"{gw}/v1/files",
        headers=headers,
        files={"file": ("in.jsonl", content.encode(), "application/jsonl")},
        data={"purpose": "batch"},
    )
    assert up.status_code == 200, up.text
    file_id = up.json()["id"]
    read = httpx.get(f"{gw}/v1/files/{file_id}/content", headers=headers)
    assert read.status_code == 200
    assert secret not in read.text and secret[4:] not in read.text and read.text.count("REDACTED") >= 5, read.text
    assert [json.loads(line)["custom_id"] for line in read.text.splitlines()[:2]] == ["a", "b-REDACTED"]

    made = httpx.post(
        f"{gw}/v1/batches",
        headers=headers,
        json={"input_file_id": file_id, "endpoint": "/v1/responses", "completion_window": "24h"},
    )
    assert made.status_code == 200, made.text
    batch_id = made.json()["id"]
    batch = wait_for(
        lambda: (
            (b := httpx.get(f"{gw}/v1/batches/{batch_id}", headers=headers).json())["status"]
            in ("completed", "failed", "expired", "cancelled")
            and b
        ),
        timeout=90,
        interval=0.3,
        what="the batch to finish",
    )
    assert batch["status"] == "completed", batch
    outputs = [batch.get("output_file_id"), batch.get("error_file_id")]
    assert outputs[0], batch
    for output in filter(None, outputs):
        text = httpx.get(f"{gw}/v1/files/{output}/content", headers=headers).text
        assert secret not in text and secret[4:] not in text, text
    first = json.loads(httpx.get(f"{gw}/v1/files/{outputs[0]}/content", headers=headers).text.splitlines()[0])
    assert first["custom_id"] == "a" and "REDACTED" in first["response"]["body"]["instructions"]
    assert not any(secret.encode() in v or secret[4:].encode() in v for v in _stored(chart_stack))
