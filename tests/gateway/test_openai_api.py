"""The OpenAI API's rendering: chat completions, completions and embeddings, whole and streamed, from a
local model and from external providers (OpenAI's and Anthropic's wire formats), with retries and
fallbacks when an upstream fails."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson

from tests.conftest import EMBEDDER, SERVED
from tests.gateway.conftest import Fleet

MODEL = f"local/{SERVED}"
MESSAGES = [{"role": "user", "content": "hi"}]


def sse(resp: httpx.Response) -> list[Any]:
    """The `data:` payloads of an SSE body, `[DONE]` as the string."""
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/event-stream")
    out: list[Any] = []
    for line in resp.text.splitlines():
        if line.startswith("data: "):
            out.append("[DONE]" if line == "data: [DONE]" else orjson.loads(line[6:]))
    return out


def streamed_text(chunks: list[Any], key: str = "content") -> str:
    texts = (
        c["choices"][0].get("delta", {}).get(key) or c["choices"][0].get("text") or ""
        for c in chunks[:-1]
        if c["choices"]
    )
    return "".join(texts)


async def calls(url: str) -> dict[str, int]:
    async with httpx.AsyncClient() as client:
        got: dict[str, int] = (await client.get(f"{url}/_calls")).json()
    return got


async def test_a_chat_completion(http: httpx.AsyncClient) -> None:
    resp = await http.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": MESSAGES, "max_tokens": 5},
        headers={"x-request-id": "mine-1"},
    )
    assert resp.status_code == 200 and resp.headers["x-iir-model"] == MODEL and resp.headers["x-request-id"] == "mine-1"
    data = resp.json()
    assert data["object"] == "chat.completion" and data["choices"][0]["message"]["content"]
    assert data["usage"]["completion_tokens"] == 5


async def test_a_streamed_chat_completion_shows_usage_only_when_asked(http: httpx.AsyncClient) -> None:
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 5, "stream": True}
    chunks = sse(await http.post("/v1/chat/completions", json=body))
    assert chunks[-1] == "[DONE]" and all(c.get("usage") is None for c in chunks[:-1])
    assert all(c["object"] == "chat.completion.chunk" for c in chunks[:-1]) and streamed_text(chunks)
    asked = sse(await http.post("/v1/chat/completions", json={**body, "stream_options": {"include_usage": True}}))
    assert asked[-2]["choices"] == [] and asked[-2]["usage"]["completion_tokens"] == 5


async def test_a_completion_whole_and_streamed(http: httpx.AsyncClient) -> None:
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 4}
    whole = await http.post("/v1/completions", json=body)
    assert whole.status_code == 200 and whole.json()["object"] == "text_completion"
    assert whole.json()["choices"][0]["text"]
    chunks = sse(await http.post("/v1/completions", json={**body, "stream": True}))
    assert chunks[-1] == "[DONE]" and all(c["object"] == "text_completion" for c in chunks[:-1])
    assert streamed_text(chunks)


async def test_embeddings_local_and_external(http: httpx.AsyncClient) -> None:
    local = await http.post("/v1/embeddings", json={"model": f"local/{EMBEDDER}", "input": ["a", "b c"]})
    assert local.status_code == 200, local.text
    assert [d["index"] for d in local.json()["data"]] == [0, 1] and local.json()["usage"]["prompt_tokens"] > 0
    external = await http.post("/v1/embeddings", json={"model": "openai/text-embedding-3-small", "input": "x"})
    assert external.status_code == 200 and external.json()["data"][0]["embedding"] == [0.1] * 4
    assert external.headers["x-iir-model"] == "openai/text-embedding-3-small"


async def test_an_external_openai_model_whole_and_streamed(http: httpx.AsyncClient) -> None:
    body = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "ping"}]}
    whole = await http.post("/v1/chat/completions", json=body)
    assert whole.status_code == 200 and whole.headers["x-iir-model"] == "openai/gpt-4o-mini"
    assert whole.json()["choices"][0]["message"]["content"] == "Echo from gpt-4o-mini: ping"
    chunks = sse(await http.post("/v1/chat/completions", json={**body, "stream": True}))
    assert streamed_text(chunks) == "Echo from gpt-4o-mini: ping"


async def test_an_anthropic_model_answers_in_openais_format(http: httpx.AsyncClient) -> None:
    body = {"model": "anthropic/claude-sonnet-4-5", "messages": [{"role": "user", "content": "ping"}], "max_tokens": 20}
    whole = await http.post("/v1/chat/completions", json=body)
    assert whole.status_code == 200, whole.text
    text = whole.json()["choices"][0]["message"]["content"]
    assert whole.json()["object"] == "chat.completion" and text
    assert streamed_text(sse(await http.post("/v1/chat/completions", json={**body, "stream": True}))) == text


async def test_a_failing_upstream_is_retried(http: httpx.AsyncClient, fleet: Fleet) -> None:
    model = f"gpt-{uuid.uuid4().hex[:6]}-flaky"  # fails twice with 503, then answers
    resp = await http.post("/v1/chat/completions", json={"model": f"openai/{model}", "messages": MESSAGES})
    assert resp.status_code == 200, resp.text
    assert (await calls(fleet.openai_url))[model] == 3


async def test_retries_run_out_then_the_fallback_answers(http: httpx.AsyncClient, fleet: Fleet) -> None:
    model = f"gpt-{uuid.uuid4().hex[:6]}-500"
    alone = await http.post("/v1/chat/completions", json={"model": f"openai/{model}", "messages": MESSAGES})
    assert alone.status_code == 502 and alone.json()["error"]["code"] == "upstream_error"
    assert (await calls(fleet.openai_url))[model] == 3  # the first try and two retries
    rescued = await http.post("/v1/chat/completions", json={"model": "openai/gpt-500", "messages": MESSAGES})
    assert rescued.status_code == 200 and rescued.headers["x-iir-model"] == "openai/gpt-4o-mini"
    local = await http.post("/v1/chat/completions", json={"model": "local/dead-with-fallback", "messages": MESSAGES})
    assert local.status_code == 200 and local.headers["x-iir-model"] == MODEL
    down = await http.post("/v1/chat/completions", json={"model": "broken/down", "messages": MESSAGES})
    assert down.status_code == 200 and down.headers["x-iir-model"] == "openai/gpt-4o-mini"
    alone = await http.post("/v1/chat/completions", json={"model": "broken/down-alone", "messages": MESSAGES})
    assert alone.status_code == 502 and alone.json()["error"]["code"] == "upstream_unreachable"


async def test_upstream_rate_limits_reach_the_client(http: httpx.AsyncClient) -> None:
    model = f"openai/gpt-{uuid.uuid4().hex[:6]}-429"
    resp = await http.post("/v1/chat/completions", json={"model": model, "messages": MESSAGES})
    assert resp.status_code == 429 and resp.json()["error"]["code"] == "upstream_rate_limited"
    assert resp.json()["error"]["type"] == "rate_limit_error"
    assert resp.headers["retry-after"] == "0" and resp.headers["x-ratelimit-remaining-requests"] == "0"


async def test_an_upstream_refusal_is_the_callers(http: httpx.AsyncClient) -> None:
    resp = await http.post("/v1/chat/completions", json={"model": "openai/gpt-x-bad", "messages": MESSAGES})
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "string_above_max_length"
    assert resp.json()["error"]["type"] == "invalid_request_error"


async def test_a_stream_that_breaks_off_ends_with_an_error_event(http: httpx.AsyncClient) -> None:
    model = f"openai/gpt-{uuid.uuid4().hex[:6]}-die"
    body = {"model": model, "messages": [{"role": "user", "content": "one two three four"}], "stream": True}
    chunks = sse(await http.post("/v1/chat/completions", json=body))
    assert chunks[-1] != "[DONE]" and chunks[-1]["error"]["code"] == "upstream_error"
    whole = await http.post("/v1/chat/completions", json={**body, "stream": False})
    assert whole.status_code == 502 and whole.json()["error"]["code"] == "upstream_error"
