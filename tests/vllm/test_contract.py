"""What real vLLM answers, through the gateway, must reach the client whole."""

from __future__ import annotations

import httpx
import openai
import pytest

from iir_dev.stack import Stack
from tests.vllm.conftest import MODEL

MESSAGES = [{"role": "user", "content": "Say hello in three words."}]


@pytest.fixture(scope="module")
def client(vllm_stack: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{vllm_stack.gateway_url}/v1", api_key=key, timeout=120)


def test_models_lists_the_served_model(client: openai.OpenAI) -> None:
    assert MODEL in [m.id for m in client.models.list()]


def test_chat_completion(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8, temperature=0)
    assert out.choices[0].message.content and out.usage and out.usage.completion_tokens > 0


@pytest.mark.parametrize("include_usage", [False, True])
def test_streaming_with_and_without_usage(client: openai.OpenAI, include_usage: bool) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True} if include_usage else None,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert bool(chunks[-1].usage) is include_usage


def test_n_two_answers_two_choices(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=6, n=2, temperature=0.8, seed=1)
    assert sorted(c.index for c in out.choices) == [0, 1]


def test_an_upstream_validation_error_reaches_the_client(vllm_stack: Stack, key: str) -> None:
    resp = httpx.post(
        f"{vllm_stack.gateway_url}/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": MODEL, "messages": MESSAGES, "max_tokens": 100_000},
        timeout=60,
    )
    assert resp.status_code == 400, resp.text
    assert "error" in resp.json()
