"""The simulated vLLM answers every recorded request in the shape real vLLM 0.32 gave
(`tests/data/vllm/`, recorded by `make test-vllm`): the same keys and value types, the same status and
error fields, the same kinds of stream chunks. So the two cannot drift apart unnoticed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import jsonschema
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from iir_simbackend.app import create_app
from iir_simbackend.settings import SimSettings
from tests.vllm.recording import (
    CASES,
    GREETING,
    MODEL,
    RECORDINGS,
    STRUCTURED,
    Case,
    answer_shape,
    load,
    parse_stream,
)

# The tiny real model answers `tool_choice: auto` in text; the simulator calls the tool, as a capable
# model does (the call's shape is checked by the `required` and named cases).
DIFFERENT_BY_DESIGN = {"chat_tools_auto"}
SimClient = TestClient[web.Request, web.Application]


@pytest.fixture
async def sim() -> AsyncIterator[SimClient]:
    client = TestClient(TestServer(create_app(SimSettings(models=MODEL, max_model_len=2048))))
    await client.start_server()
    yield client
    await client.close()


async def answer(sim: SimClient, case: Case) -> tuple[int, object]:
    resp = await sim.request(case.method, case.path, json=case.body)
    text = await resp.text()
    if case.stream and resp.status == 200:
        return resp.status, parse_stream(text)
    return resp.status, await resp.json(content_type=None)


def _kinds(chunks: list[object]) -> set[str]:
    return {json.dumps(c, sort_keys=True) for c in chunks}


@pytest.mark.parametrize("case", [c for c in CASES if c.name not in DIFFERENT_BY_DESIGN], ids=lambda c: c.name)
async def test_the_simulator_answers_as_real_vllm(sim: SimClient, case: Case) -> None:
    recorded = load(case.name)
    status, body = await answer(sim, case)
    got, real = answer_shape(status, body), answer_shape(recorded["status"], recorded["body"])
    if case.name in STRUCTURED:  # as vLLM's guided decoding: the answer is a value of the schema
        jsonschema.validate(json.loads(body["choices"][0]["message"]["content"]), GREETING)  # type: ignore[index]
    if not (case.stream and status == 200):
        assert got == real
        return
    # Every kind of chunk the simulator sends, vLLM sends; and it sends every kind vLLM sent, but the
    # finish on a token that decoded to no text yet (`"delta": {}`), which is the model's, not the format's.
    assert got["status"] == real["status"]
    assert _kinds(got["body"]) <= _kinds(real["body"]), _kinds(got["body"]) - _kinds(real["body"])
    missing = [k for k in _kinds(real["body"]) - _kinds(got["body"]) if '"delta": {}' not in k]
    assert not missing


async def test_auto_tool_choice_calls_the_tool_then_answers_its_result(sim: SimClient) -> None:
    case = next(c for c in CASES if c.name == "chat_tools_auto")
    _, called = await answer(sim, case)
    call = called["choices"][0]["message"]["tool_calls"][0]  # type: ignore[index]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert called["choices"][0]["finish_reason"] == "tool_calls"  # type: ignore[index]
    messages = [
        *case.body["messages"],  # type: ignore[index]
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny"},
    ]
    _, answered = await answer(sim, Case("after", case.path, {**(case.body or {}), "messages": messages}))
    assert answered["choices"][0]["message"]["content"]  # type: ignore[index]


async def test_metrics_are_named_as_real_vllm_exports_them(sim: SimClient) -> None:
    await answer(sim, next(c for c in CASES if c.name == "chat"))
    text = await (await sim.get("/metrics")).text()
    real = (RECORDINGS / "metrics.txt").read_text()

    def families(metrics: str) -> set[str]:
        return {line.split(" ")[2] for line in metrics.splitlines() if line.startswith("# TYPE vllm:")}

    assert families(text) <= families(real)
    for scraped in ("vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc"):
        assert scraped in families(real) and scraped in families(text)
    assert "vllm:prompt_tokens_created" in text and "vllm:time_to_first_token_seconds_created" in text


async def test_embeddings(sim: SimClient) -> None:
    settings = SimSettings(models=MODEL, embedding_models="embedder", embedding_dims=100)
    async with TestClient(TestServer(create_app(settings))) as client:
        plain = await (await client.post("/v1/embeddings", json={"model": "embedder", "input": ["a", "b"]})).json()
        assert [len(d["embedding"]) for d in plain["data"]] == [100, 100]
        small = await client.post("/v1/embeddings", json={"model": "embedder", "input": "a", "dimensions": 80})
        assert len((await small.json())["data"][0]["embedding"]) == 80  # above 64: no crash
        too_big = await client.post("/v1/embeddings", json={"model": "embedder", "input": "a", "dimensions": 101})
        assert too_big.status == 400 and (await too_big.json())["error"]["param"] == "dimensions"
        b64 = await client.post("/v1/embeddings", json={"model": "embedder", "input": "a", "encoding_format": "base64"})
        assert isinstance((await b64.json())["data"][0]["embedding"], str)
        chat = await client.post("/v1/chat/completions", json={"model": "embedder", "messages": []})
        assert chat.status == 404 and await chat.json() == {"detail": "Not Found"}


async def test_any_model_is_served_with_a_star() -> None:
    async with TestClient(TestServer(create_app(SimSettings(models="*")))) as client:
        body = {"model": "my-new-model", "messages": [{"role": "user", "content": "hi"}]}
        assert (await client.post("/v1/chat/completions", json=body)).status == 200
        listed = await (await client.get("/v1/models")).json()
        assert [m["id"] for m in listed["data"]] == ["my-new-model"]
