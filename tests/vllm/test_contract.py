"""What real vLLM answers, through the gateway, must reach the client whole."""

from __future__ import annotations

import httpx
import openai
import pytest

from iir_dev.stack import Stack
from tests.vllm.conftest import MODEL
from tests.waiting import wait_for

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


def test_logprobs_and_stop_pass_through(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=8, temperature=0, logprobs=True, top_logprobs=2, stop=["\n"]
    )
    entries = out.choices[0].logprobs.content  # type: ignore[union-attr]
    assert entries and len(entries[0].top_logprobs) == 2
    assert "\n" not in (out.choices[0].message.content or "")


def test_a_cached_streamed_n2_answer_replays_both_choices_whole(client: openai.OpenAI) -> None:
    def streamed() -> dict[int, str]:
        stream = client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            max_tokens=6,
            n=2,
            seed=7,
            temperature=0.9,
            stream=True,
            extra_headers={"x-iir-cache": "on"},
        )
        texts: dict[int, str] = {}
        for chunk in stream:
            for choice in chunk.choices:
                texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
        return texts

    first = streamed()
    assert sorted(first) == [0, 1]
    assert streamed() == first  # from the cache: both choices, each its own text


def test_an_async_job_keeps_the_answer_and_its_id(vllm_stack: Stack, key: str) -> None:
    headers = {"authorization": f"Bearer {key}"}
    job = httpx.post(
        f"{vllm_stack.gateway_url}/v1/async/chat/completions",
        headers=headers,
        json={"model": MODEL, "messages": MESSAGES, "max_tokens": 6},
        timeout=30,
    ).json()

    def finished() -> dict | None:
        got = httpx.get(f"{vllm_stack.gateway_url}/v1/async/chat/completions/{job['job_id']}", headers=headers).json()
        return got if got["status"] in ("completed", "failed") else None

    done = wait_for(finished, timeout=120, interval=0.5, what="the job to finish")
    assert done["status"] == "completed", done
    result = done["result"]
    assert result["id"] != "chatcmpl-" and result["choices"][0]["message"]["content"]
