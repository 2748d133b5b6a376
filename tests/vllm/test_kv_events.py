"""Precise prefix routing against the real engine: IIR tokenizes and hashes a prompt as vLLM does, so the
blocks vLLM's KV events name are the blocks IIR computes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest
import zmq

from iir_common.kv_blocks import BlockHasher, PromptTokenizer
from iir_dev import datastores, real_vllm
from iir_dev.stack import Stack
from tests.conftest import inference_model, write_models
from tests.vllm.conftest import MODEL
from tests.waiting import wait_for

SYSTEM = "You are a careful assistant who answers questions about routers, caches and GPUs. " * 40


def messages(question: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


@pytest.fixture(scope="module")
def tokenizer() -> PromptTokenizer:
    return PromptTokenizer.from_dir(real_vllm.build_model())


def test_chat_tokens_are_vllms(vllm_url: str, tokenizer: PromptTokenizer) -> None:
    for question in ("What is a KV cache?", "Ünïcode, emoji 🙂 and\nnew lines\t too"):
        body = {"model": real_vllm.SERVED, "messages": messages(question), "add_generation_prompt": True}
        resp = httpx.post(f"{vllm_url}/tokenize", json=body, timeout=30)
        assert resp.status_code == 200, resp.text
        assert tokenizer.chat_ids(messages(question)) == resp.json()["tokens"]


def _replayed(replay_port: int) -> set[int]:
    """Every block hash vLLM's events say it stored, from its replay socket (all batches since seq 0)."""
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.connect(f"tcp://127.0.0.1:{replay_port}")
    stored: set[int] = set()
    try:
        sock.send_multipart((b"", (0).to_bytes(8, "big")))
        while True:
            assert sock.poll(30_000), "no answer from the replay socket"
            _empty, _topic, seq, payload = sock.recv_multipart()  # vLLM 0.32 replays the topic too
            if int.from_bytes(seq, "big", signed=True) == -1:
                return stored
            _ts, events, *_ = msgspec.msgpack.decode(payload)
            for event in events:  # vLLM 0.32: a batch is an array, its events tagged maps
                if event["type"] == "BlockStored":
                    stored.update(event["block_hashes"])
    finally:
        sock.close(linger=0)


def test_kv_events_name_the_blocks_iir_hashes(
    vllm_url: str, vllm_kv_events: tuple[int, int], tokenizer: PromptTokenizer
) -> None:
    question = messages("Name three caches.")
    ids = tokenizer.chat_ids(question)
    hasher = BlockHasher(real_vllm.HASH_ALGO, real_vllm.HASH_SEED, real_vllm.BLOCK_SIZE)
    expected = set(hasher.external_hashes(ids))
    assert len(expected) >= 4
    body = {"model": real_vllm.SERVED, "messages": question, "max_tokens": 1}
    assert httpx.post(f"{vllm_url}/v1/chat/completions", json=body, timeout=60).status_code == 200
    # Events are published after the step that stored the blocks: wait until the replay holds them all.
    wait_for(lambda: expected <= _replayed(vllm_kv_events[1]), timeout=60, interval=0.2, what="the prompt's blocks")


def _metric(text: str, name: str) -> float:
    """The sum of a metric's samples over its label sets."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture(scope="module")
def kv_stack(
    vllm_url: str, vllm_kv_events: tuple[int, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The gateway in front of the vLLM, listed as two replicas (two URLs, one engine: both hold what it
    caches), its KV events followed by the registry and the model's tokenizer mounted for the gateway."""
    work = tmp_path_factory.mktemp("kv-stack")
    model = real_vllm.build_model()
    doc = inference_model(real_vllm.SERVED, vllm_url)
    doc["spec"]["tokenizer"] = model.name
    doc["spec"]["vllm"] = {"extraArgs": ["--block-size", str(real_vllm.BLOCK_SIZE)]}
    doc["spec"]["routing"] = {"hashSeed": real_vllm.HASH_SEED}
    events = {
        "kvEvents": f"tcp://127.0.0.1:{vllm_kv_events[0]}",
        "kvEventsReplay": f"tcp://127.0.0.1:{vllm_kv_events[1]}",
    }
    port = vllm_url.rsplit(":", 1)[1]
    doc["status"]["endpoints"] = [
        {"url": url, "ready": True, "target": name, **events}
        for name, url in (("a", vllm_url), ("b", f"http://localhost:{port}"))
    ]
    doc["status"]["readyReplicas"] = 2
    write_models(work / "models.yaml", [doc])
    pg = datastores.postgres(work, database="iir_test_vllm_kv")
    rd = datastores.redis(work)
    env = {"IIR_TOKENIZERS_DIR": str(model.parent), "IIR_ENDPOINT_PICKER": "precise_prefix"}
    stack = Stack(workdir=work, database_url=pg.url, redis_url=rd.url, env=env)
    stack.start()
    yield stack
    stack.stop()
    pg.stop()
    rd.stop()


def test_the_index_predicts_the_hit_vllm_counts(kv_stack: Stack, vllm_url: str, tokenizer: PromptTokenizer) -> None:
    key = kv_stack.create_key("kv-events")
    headers = {"Authorization": f"Bearer {key}"}
    first, second = messages("Name three caches."), messages("Name three routers.")
    hasher = BlockHasher(real_vllm.HASH_ALGO, real_vllm.HASH_SEED, real_vllm.BLOCK_SIZE)
    shared = 0
    for a, b in zip(
        hasher.external_hashes(tokenizer.chat_ids(first)),
        hasher.external_hashes(tokenizer.chat_ids(second)),
        strict=False,
    ):
        if a != b:
            break
        shared += 1
    assert shared >= 3
    body = {"model": MODEL, "messages": first, "max_tokens": 1}
    resp = httpx.post(f"{kv_stack.gateway_url}/v1/chat/completions", json=body, headers=headers, timeout=60)
    assert resp.status_code == 200, resp.text
    # The registry follows the engine's events and pushes them: the gateway's index holds the prompt's blocks.
    wait_for(
        lambda: _metric(httpx.get(kv_stack.metrics_url).text, "iir_gateway_endpoint_kv_blocks") >= 2 * shared,
        timeout=60,
        what="the gateway's index to hold the served prompt's blocks",
    )
    gateway, engine = httpx.get(kv_stack.metrics_url).text, httpx.get(f"{vllm_url}/metrics").text
    predicted, hits = (
        _metric(gateway, "iir_gateway_endpoint_predicted_cached_tokens_total"),
        _metric(engine, "vllm:prefix_cache_hits_total"),
    )
    body = {"model": MODEL, "messages": second, "max_tokens": 1}
    resp = httpx.post(f"{kv_stack.gateway_url}/v1/chat/completions", json=body, headers=headers, timeout=60)
    assert resp.status_code == 200, resp.text
    predicted = (
        _metric(httpx.get(kv_stack.metrics_url).text, "iir_gateway_endpoint_predicted_cached_tokens_total") - predicted
    )
    hits = _metric(httpx.get(f"{vllm_url}/metrics").text, "vllm:prefix_cache_hits_total") - hits
    assert predicted == shared * real_vllm.BLOCK_SIZE  # a hit on the replica it went to: the shared blocks
    assert hits == predicted  # and vLLM counts exactly that
