"""The response cache against real Redis, through the real gateway."""

from __future__ import annotations

import json
import uuid

import httpx

from iir_dev.stack import Stack
from tests.conftest import SERVED
from tests.waiting import wait_for


def chat(stack: Stack, key: str, content: str, **extra: object) -> httpx.Response:
    body = {"model": f"local/{SERVED}", "messages": [{"role": "user", "content": content}], "max_tokens": 8, **extra}
    headers = {"Authorization": f"Bearer {key}", **extra.pop("headers", {})}  # type: ignore[dict-item]
    return httpx.post(f"{stack.gateway_url}/v1/chat/completions", json=body, headers=headers, timeout=20)


def hits(stack: Stack) -> float:
    text = httpx.get(stack.metrics_url).text
    line = next(
        (ln for ln in text.splitlines() if ln.startswith('iir_gateway_cache_requests_total{result="hit"}')), "x 0"
    )
    return float(line.split()[-1])


def test_deterministic_requests_hit_after_a_miss(stack: Stack, api_key: str) -> None:
    prompt = f"cache me {uuid.uuid4()}"
    first = chat(stack, api_key, prompt, temperature=0)
    assert first.status_code == 200 and first.headers["x-iir-cache"] == "miss"
    before = hits(stack)
    assert wait_for(lambda: chat(stack, api_key, prompt, temperature=0).headers["x-iir-cache"] == "hit")
    again = chat(stack, api_key, prompt, temperature=0)
    assert again.json()["choices"] == first.json()["choices"] and again.headers["x-iir-model"] == f"local/{SERVED}"
    assert hits(stack) > before
    # Another answer-changing parameter is another entry; `user` is not.
    assert chat(stack, api_key, prompt, temperature=0, max_tokens=3).headers["x-iir-cache"] == "miss"
    assert chat(stack, api_key, prompt, temperature=0, user="someone").headers["x-iir-cache"] == "hit"


def test_non_deterministic_requests_bypass_unless_opted_in(stack: Stack, api_key: str) -> None:
    prompt = f"creative {uuid.uuid4()}"
    plain = chat(stack, api_key, prompt, temperature=0.8)
    assert plain.status_code == 200 and "x-iir-cache" not in plain.headers
    opted = chat(stack, api_key, prompt, temperature=0.8, headers={"x-iir-cache": "on"})
    assert opted.headers["x-iir-cache"] == "miss"
    assert wait_for(
        lambda: (
            chat(stack, api_key, prompt, temperature=0.8, headers={"x-iir-cache": "on"}).headers["x-iir-cache"] == "hit"
        )
    )
    off = chat(stack, api_key, prompt, temperature=0, seed=1, headers={"x-iir-cache": "off"})
    assert "x-iir-cache" not in off.headers


def test_a_stream_is_replayed_from_the_cache(stack: Stack, api_key: str) -> None:
    prompt = f"stream me {uuid.uuid4()}"
    first = chat(stack, api_key, prompt, seed=7, stream=True)
    assert first.headers["x-iir-cache"] == "miss"

    def text(resp: httpx.Response) -> tuple[str, list[str]]:
        events = [json.loads(line[6:]) for line in resp.text.splitlines() if line.startswith("data: {")]
        content = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
        return content, [
            e["choices"][0]["finish_reason"] for e in events if e["choices"] and e["choices"][0]["finish_reason"]
        ]

    assert wait_for(lambda: chat(stack, api_key, prompt, seed=7, stream=True).headers["x-iir-cache"] == "hit")
    replayed = chat(stack, api_key, prompt, seed=7, stream=True, stream_options={"include_usage": True})
    assert replayed.headers["x-iir-cache"] == "hit" and replayed.text.rstrip().endswith("data: [DONE]")
    assert text(replayed) == text(first)
    assert '"usage"' in replayed.text  # asked for, so the usage chunk is replayed too
    # The stream's entry also answers the same request without streaming.
    unary = chat(stack, api_key, prompt, seed=7)
    assert unary.headers["x-iir-cache"] == "hit" and unary.json()["choices"][0]["message"]["content"] == text(first)[0]


def test_entries_are_per_key(stack: Stack, api_key: str) -> None:
    prompt = f"mine {uuid.uuid4()}"
    chat(stack, api_key, prompt, temperature=0)
    assert wait_for(lambda: chat(stack, api_key, prompt, temperature=0).headers["x-iir-cache"] == "hit")
    other = stack.create_key("cache-neighbour")
    assert chat(stack, other, prompt, temperature=0).headers["x-iir-cache"] == "miss"


def test_a_key_can_turn_the_cache_off(stack: Stack) -> None:
    key = httpx.post(f"{stack.gateway_url}/api/v1/apikeys", json={"name": "nocache", "cache_mode": "off"}).json()
    prompt = f"never {uuid.uuid4()}"
    assert "x-iir-cache" not in chat(stack, key["key"], prompt, temperature=0).headers
