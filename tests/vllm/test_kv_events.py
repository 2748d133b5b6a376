"""Precise prefix routing against the real engine: IIR tokenizes and hashes a prompt as vLLM does, so the
blocks vLLM's KV events name are the blocks IIR computes."""

from __future__ import annotations

import time
from typing import Any

import httpx
import msgspec
import pytest
import zmq

from iir_common.kv_blocks import BlockHasher, PromptTokenizer
from iir_dev import real_vllm

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
    deadline = time.monotonic() + 60
    while not expected <= (stored := _replayed(vllm_kv_events[1])) and time.monotonic() < deadline:
        time.sleep(0.2)  # events are published after the step that stored the blocks
    assert expected <= stored
