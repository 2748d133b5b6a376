"""The response cache against real Redis, through the gateway app (moved from tests/integration/)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx

from tests.conftest import SERVED
from tests.gateway.conftest import Fleet, Gateway
from tests.waiting import eventually


async def chat(gateway: Gateway, key: str, content: str, **extra: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", **extra.pop("headers", {})}
    body = {"model": f"local/{SERVED}", "messages": [{"role": "user", "content": content}], "max_tokens": 8, **extra}
    return await gateway.client.post("/v1/chat/completions", json=body, headers=headers)


def hits(gateway: Gateway) -> float:
    line = next(
        (
            ln
            for ln in gateway.metrics().splitlines()
            if ln.startswith('iir_gateway_cache_requests_total{result="hit"}')
        ),
        "x 0",
    )
    return float(line.split()[-1])


async def cached(gateway: Gateway, key: str, content: str, **extra: Any) -> bool:
    resp = await chat(gateway, key, content, **extra)
    return bool(resp.headers.get("x-iir-cache") == "hit")


async def test_deterministic_requests_hit_after_a_miss(gateway: Gateway, api_key: str) -> None:
    prompt = f"cache me {uuid.uuid4()}"
    first = await chat(gateway, api_key, prompt, temperature=0)
    assert first.status_code == 200 and first.headers["x-iir-cache"] == "miss"
    before = hits(gateway)
    await eventually(lambda: cached(gateway, api_key, prompt, temperature=0))
    again = await chat(gateway, api_key, prompt, temperature=0)
    assert again.json()["choices"] == first.json()["choices"] and again.headers["x-iir-model"] == f"local/{SERVED}"
    assert hits(gateway) > before
    # Another answer-changing parameter is another entry; `user` is not.
    assert (await chat(gateway, api_key, prompt, temperature=0, max_tokens=3)).headers["x-iir-cache"] == "miss"
    assert (await chat(gateway, api_key, prompt, temperature=0, user="someone")).headers["x-iir-cache"] == "hit"


async def test_non_deterministic_requests_bypass_unless_opted_in(gateway: Gateway, api_key: str) -> None:
    prompt = f"creative {uuid.uuid4()}"
    plain = await chat(gateway, api_key, prompt, temperature=0.8)
    assert plain.status_code == 200 and "x-iir-cache" not in plain.headers
    opted = await chat(gateway, api_key, prompt, temperature=0.8, headers={"x-iir-cache": "on"})
    assert opted.headers["x-iir-cache"] == "miss"
    await eventually(lambda: cached(gateway, api_key, prompt, temperature=0.8, headers={"x-iir-cache": "on"}))
    off = await chat(gateway, api_key, prompt, temperature=0, seed=1, headers={"x-iir-cache": "off"})
    assert "x-iir-cache" not in off.headers


def streamed(resp: httpx.Response) -> tuple[str, list[str]]:
    """A stream's text and its finish reasons."""
    events = [json.loads(line[6:]) for line in resp.text.splitlines() if line.startswith("data: {")]
    content = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    return content, [
        e["choices"][0]["finish_reason"] for e in events if e["choices"] and e["choices"][0]["finish_reason"]
    ]


async def test_a_stream_is_replayed_from_the_cache(gateway: Gateway, api_key: str) -> None:
    prompt = f"stream me {uuid.uuid4()}"
    first = await chat(gateway, api_key, prompt, seed=7, stream=True)
    assert first.headers["x-iir-cache"] == "miss"
    await eventually(lambda: cached(gateway, api_key, prompt, seed=7, stream=True))
    replayed = await chat(gateway, api_key, prompt, seed=7, stream=True, stream_options={"include_usage": True})
    assert replayed.headers["x-iir-cache"] == "hit" and replayed.text.rstrip().endswith("data: [DONE]")
    assert streamed(replayed) == streamed(first)
    assert '"usage"' in replayed.text  # asked for, so the usage chunk is replayed too
    # The stream's entry also answers the same request without streaming.
    unary = await chat(gateway, api_key, prompt, seed=7)
    assert unary.headers["x-iir-cache"] == "hit"
    assert unary.json()["choices"][0]["message"]["content"] == streamed(first)[0]


async def test_replayed_logprobs_have_the_schema_s_refusal(gateway: Gateway, api_key: str) -> None:
    # OpenAI's ChatCompletion and its chunks require both `content` and `refusal` in a choice's logprobs.
    prompt = f"logprobs {uuid.uuid4()}"
    first = await chat(gateway, api_key, prompt, seed=3, stream=True, logprobs=True)
    assert first.headers["x-iir-cache"] == "miss"
    await eventually(lambda: cached(gateway, api_key, prompt, seed=3, stream=True, logprobs=True))
    replayed = await chat(gateway, api_key, prompt, seed=3, stream=True, logprobs=True)
    events = [json.loads(line[6:]) for line in replayed.text.splitlines() if line.startswith("data: {")]
    chunks = [c["logprobs"] for e in events for c in e["choices"] if c.get("logprobs")]
    assert chunks and all(set(lp) >= {"content", "refusal"} for lp in chunks)
    unary = await chat(gateway, api_key, prompt, seed=3, logprobs=True)
    assert unary.headers["x-iir-cache"] == "hit"
    assert set(unary.json()["choices"][0]["logprobs"]) >= {"content", "refusal"}


async def test_entries_are_per_key(gateway: Gateway, fleet: Fleet, api_key: str) -> None:
    prompt = f"mine {uuid.uuid4()}"
    await chat(gateway, api_key, prompt, temperature=0)
    await eventually(lambda: cached(gateway, api_key, prompt, temperature=0))
    other = await fleet.create_key("cache-neighbour")
    assert (await chat(gateway, other, prompt, temperature=0)).headers["x-iir-cache"] == "miss"


async def test_a_key_can_turn_the_cache_off(gateway: Gateway) -> None:
    key = (await gateway.client.post("/api/v1/apikeys", json={"name": "nocache", "cache_mode": "off"})).json()
    prompt = f"never {uuid.uuid4()}"
    assert "x-iir-cache" not in (await chat(gateway, key["key"], prompt, temperature=0)).headers
