"""The simulated vLLM with its engine model, over HTTP: the OpenAI SDK streams a chat timed by the engine,
usage and vLLM's metrics come from the engine (prefix-cache hits included), `--stream-interval`
coalescing, a client that leaves stops its request, and several replicas share one process."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from openai import AsyncOpenAI

from iir_common.kv_blocks import PromptTokenizer
from iir_common.kv_blocks.testing import tiny_tokenizer_dir
from iir_simbackend.__main__ import replica_settings, start_replicas
from iir_simbackend.answers import plan_chat
from iir_simbackend.app import ENGINE, create_app
from iir_simbackend.engine.calibration import LLAMA_31_8B_H100, prefill_pairs, step_seconds
from iir_simbackend.engine.tokens import StandInTokenizer
from iir_simbackend.settings import SimSettings
from tests.waiting import eventually

Client = TestClient[web.Request, web.Application]
SYSTEM = "you are a coding agent that reads files and runs the tests before answering " * 8


def engine_settings(**overrides: Any) -> SimSettings:
    return SimSettings(**{"models": "m", "engine": "llama-3.1-8b-h100", "time_scale": 0.05, **overrides})


@pytest.fixture
async def sim() -> AsyncIterator[Client]:
    async with TestClient(TestServer(create_app(engine_settings()))) as client:
        yield client


def messages(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)}\{{[^}}]*\}} (\S+)$", text, re.MULTILINE)
    assert found, name
    return float(found.group(1))


async def test_the_openai_sdk_streams_a_chat_timed_by_the_engine(sim: Client) -> None:
    client = AsyncOpenAI(base_url=str(sim.make_url("/v1")), api_key="unused")
    stream = await client.chat.completions.create(
        model="m",
        messages=messages("what does the scheduler do"),  # type: ignore[call-overload]
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=12,
    )
    text, usage = "", None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        usage = chunk.usage or usage
    planned = plan_chat({"messages": messages("what does the scheduler do"), "max_tokens": 12}, 0).outputs[0]
    assert text == planned.generated.text  # the same words as without the engine
    assert usage is not None
    assert usage.prompt_tokens == len(StandInTokenizer().chat_ids(messages("what does the scheduler do"), None))
    assert usage.completion_tokens == len(planned.generated.tokens)


async def test_a_repeated_prompt_is_a_prefix_cache_hit_in_vllm_metrics(sim: Client) -> None:
    for question in ("first question", "second question"):
        resp = await sim.post("/v1/chat/completions", json={"model": "m", "messages": messages(question)})
        assert resp.status == 200
    text = await (await sim.get("/metrics")).text()
    prompt = len(StandInTokenizer().chat_ids(messages("x y"), None))
    assert metric(text, "vllm:prefix_cache_queries_total") == 2 * prompt
    assert metric(text, "vllm:prefix_cache_hits_total") == (prompt - 3) // 16 * 16  # the shared whole blocks
    assert metric(text, "vllm:num_requests_running") == 0 and metric(text, "vllm:num_requests_waiting") == 0
    assert metric(text, "vllm:request_success_total") == 2
    assert metric(text, "vllm:num_preemptions_total") == 0


async def test_a_real_tokenizer_counts_the_prompt_as_the_gateway_does(tmp_path: Path) -> None:
    folder = tiny_tokenizer_dir(tmp_path / "tokenizer")
    async with TestClient(TestServer(create_app(engine_settings(tokenizer=str(folder))))) as client:
        resp = await client.post("/v1/chat/completions", json={"model": "m", "messages": messages("hi")})
        answer = await resp.json()
        engine = client.app[ENGINE]
    tokenizer = PromptTokenizer.from_dir(folder)
    prompt = answer["usage"]["prompt_tokens"]
    assert prompt == len(tokenizer.chat_ids(messages("hi")))
    generated = len(tokenizer.encode(answer["choices"][0]["message"]["content"]))
    assert engine.pool.num_cached == (prompt + generated - 1) // 16  # every full block computed is cached


async def test_prompt_tokens_details_report_the_cached_tokens_when_enabled() -> None:
    async with TestClient(TestServer(create_app(engine_settings(enable_prompt_tokens_details=True)))) as client:
        usages = []
        for question in ("first question", "second question"):
            resp = await client.post("/v1/chat/completions", json={"model": "m", "messages": messages(question)})
            usages.append((await resp.json())["usage"])
    assert usages[0]["prompt_tokens_details"]["cached_tokens"] == 0
    assert usages[1]["prompt_tokens_details"] == {
        "cached_tokens": (usages[1]["prompt_tokens"] - 3) // 16 * 16,
        "created_cache_tokens": 0,
        "multimodal_tokens": None,
    }


async def test_a_request_takes_at_least_the_modeled_gpu_time_times_the_scale() -> None:
    scale = 2.0
    async with TestClient(TestServer(create_app(engine_settings(time_scale=scale)))) as client:
        body = {"model": "m", "prompt": "a b c d", "max_tokens": 20, "ignore_eos": True}
        start = time.perf_counter()
        resp = await client.post("/v1/completions", json=body)
        elapsed = time.perf_counter() - start
    assert resp.status == 200
    p = LLAMA_31_8B_H100
    modeled = step_seconds(p, 4, prefill_pairs(0, 4), 0) + sum(step_seconds(p, 1, 4 + i + 1, 4 + i) for i in range(19))
    assert elapsed >= modeled * scale * 0.98


async def test_the_render_api_gives_the_prompt_tokens_routers_hash(tmp_path: Path) -> None:
    folder = tiny_tokenizer_dir(tmp_path / "tokenizer")
    async with TestClient(TestServer(create_app(engine_settings(tokenizer=str(folder))))) as client:
        resp = await client.post("/v1/chat/completions/render", json={"model": "m", "messages": messages("hi")})
        rendered = await resp.json()
        missing = await client.post("/v1/chat/completions/render", json={"model": "m"})
    assert rendered["token_ids"] == PromptTokenizer.from_dir(folder).chat_ids(messages("hi"))
    assert missing.status == 400


async def test_the_first_token_streams_alone_whatever_the_interval(tmp_path: Path) -> None:
    # (a real tokenizer makes more tokens than the answer has words: the first word still goes alone)
    settings = engine_settings(stream_interval=8, tokenizer=str(tiny_tokenizer_dir(tmp_path / "tokenizer")))
    async with TestClient(TestServer(create_app(settings))) as client:
        body = {"model": "m", "messages": messages("q"), "max_tokens": 20, "ignore_eos": True, "stream": True}
        text = await (await client.post("/v1/chat/completions", json=body)).text()
    contents = [m for m in re.findall(r'"delta":\{"content":"([^"]*)"\}', text) if m]
    assert " " not in contents[0].strip()  # one word: vLLM sends the first token at once


async def test_stream_interval_coalesces_tokens_into_fewer_chunks() -> None:
    async with TestClient(TestServer(create_app(engine_settings(stream_interval=5)))) as client:
        body = {"model": "m", "messages": messages("q"), "max_tokens": 20, "ignore_eos": True, "stream": True}
        text = await (await client.post("/v1/chat/completions", json=body)).text()
    contents = [m for m in re.findall(r'"delta":\{"content":"([^"]*)"\}', text) if m]
    assert "".join(contents) == plan_chat({**body, "messages": messages("q")}, 0).outputs[0].generated.text
    assert len(contents) <= 6  # the first token alone, then five at a time


async def test_a_client_that_leaves_stops_its_request(sim: Client) -> None:
    body = {"model": "m", "messages": messages("long"), "max_tokens": 2000, "ignore_eos": True, "stream": True}
    engine = sim.app[ENGINE]
    async with aiohttp.ClientSession() as session:
        async with session.post(sim.make_url("/v1/chat/completions"), json=body) as resp:
            await resp.content.readline()
            assert len(engine.scheduler.running) == 1
    await eventually(lambda: not engine.scheduler.running and engine.pool.usage == 0)


async def test_several_replicas_run_in_one_process_with_their_own_engine_and_metrics() -> None:
    settings = engine_settings(replicas=2, port=0, host="127.0.0.1")
    runners = await start_replicas(settings)
    try:
        urls = [f"http://127.0.0.1:{r.addresses[0][1]}" for r in runners]
        async with aiohttp.ClientSession() as session:
            body = {"model": "m", "messages": messages("hello")}
            async with session.post(f"{urls[0]}/v1/chat/completions", json=body) as resp:
                assert resp.status == 200
            counts = []
            for url in urls:
                async with session.get(f"{url}/metrics") as resp:
                    counts.append(metric(await resp.text(), "vllm:request_success_total"))
        assert counts == [1, 0]
    finally:
        for runner in runners:
            await runner.cleanup()


def test_replicas_take_consecutive_ports_and_kv_event_ports_two_apart() -> None:
    settings = SimSettings(
        port=8200, kv_events_endpoint="tcp://*:5557", kv_events_replay_endpoint="tcp://*:5558", replicas=3
    )
    third = replica_settings(settings, 2)
    assert (third.port, third.kv_events_endpoint, third.kv_events_replay_endpoint) == (
        8202,
        "tcp://*:5561",
        "tcp://*:5562",
    )
