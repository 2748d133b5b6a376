"""The simulated engine's KV events on real ZMQ sockets, read as any vLLM subscriber reads them: plain
msgpack, (topic, 8-byte big-endian sequence, payload) frames, gaps recovered from the replay socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import zmq
import zmq.asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from iir_common.kv_blocks import BlockHasher
from iir_simbackend.app import ENGINE, create_app
from iir_simbackend.engine.tokens import StandInTokenizer
from iir_simbackend.settings import SimSettings

TOPIC = b"kv@sim"
Client = TestClient[web.Request, web.Application]
SYSTEM = "you are a careful assistant that answers questions about routing " * 6


def settings() -> SimSettings:
    return SimSettings(
        models="m",
        engine="llama-3.1-8b-h100",
        time_scale=0.05,
        kv_events_endpoint="tcp://127.0.0.1:0",
        kv_events_replay_endpoint="tcp://127.0.0.1:0",
        kv_events_topic=TOPIC.decode(),
    )


@pytest.fixture
async def sim() -> AsyncIterator[Client]:
    async with TestClient(TestServer(create_app(settings()))) as client:
        yield client


@pytest.fixture
async def sub(sim: Client) -> AsyncIterator[zmq.asyncio.Socket]:
    publisher = sim.app[ENGINE].publisher
    assert publisher is not None
    sock = zmq.asyncio.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, TOPIC)
    sock.connect(publisher.endpoint)
    yield sock
    sock.close(linger=0)


def messages(question: str, system: str = SYSTEM) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": question}]


async def chat(client: Client, question: str, system: str = SYSTEM) -> dict[str, Any]:
    resp = await client.post("/v1/chat/completions", json={"model": "m", "messages": messages(question, system)})
    assert resp.status == 200
    body: dict[str, Any] = await resp.json()
    return body


async def receive(sock: zmq.asyncio.Socket) -> tuple[int, list[Any]]:
    assert await sock.poll(5000), "no KV event batch within 5 s"
    topic, seq, payload = await sock.recv_multipart()
    assert topic == TOPIC and len(seq) == 8
    return int.from_bytes(seq, "big"), msgspec.msgpack.decode(payload)


async def subscribed(client: Client, sock: zmq.asyncio.Socket) -> int:
    """Sends requests until the subscription is live (a PUB drops what it sends before), returns the
    sequence number of the first batch received."""
    for i in range(100):
        await chat(client, f"warm up number {i}")
        if await sock.poll(100):
            seq, _ = await receive(sock)
            return seq
    raise AssertionError("the subscription never received a batch")


async def test_events_are_vllm_batches_with_consecutive_sequence_numbers(sim: Client, sub: zmq.asyncio.Socket) -> None:
    last = await subscribed(sim, sub)
    system = "a system prompt no request sent before " * 4  # so every block of it is new
    await chat(sim, "which replica holds my prefix", system)
    ids = StandInTokenizer().chat_ids(messages("which replica holds my prefix", system), None)
    first_block = BlockHasher.external(BlockHasher("sha256", "vllm-none-hash", 16).block_hashes(ids)[0])
    stored: dict[str, Any] | None = None
    while stored is None:
        seq, batch = await receive(sub)
        assert seq == last + 1
        last = seq
        ts, events, rank = batch
        assert isinstance(ts, float) and rank == 0
        stored = next((e for e in events if e["type"] == "BlockStored" and first_block in e["block_hashes"]), None)
    assert stored["block_hashes"][0] == first_block and stored["parent_block_hash"] is None
    assert stored["token_ids"] == ids[: 16 * len(stored["block_hashes"])]
    assert {k: stored[k] for k in ("block_size", "medium", "lora_id", "lora_name", "group_idx")} == {
        "block_size": 16,
        "medium": "GPU",
        "lora_id": None,
        "lora_name": None,
        "group_idx": 0,
    }
    assert "extra_keys" not in stored and "session_id" not in stored  # defaults are omitted, as vLLM's


async def test_the_replay_socket_returns_the_kept_batches_then_end_seq(sim: Client, sub: zmq.asyncio.Socket) -> None:
    last = await subscribed(sim, sub)
    publisher = sim.app[ENGINE].publisher
    assert publisher is not None and publisher.replay_endpoint is not None
    replay = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    replay.connect(publisher.replay_endpoint)
    try:
        await replay.send_multipart([b"", (0).to_bytes(8, "big")])
        seqs = []
        while True:
            assert await replay.poll(5000)
            empty, topic, seq, payload = await replay.recv_multipart()
            assert empty == b""
            if seq == (-1).to_bytes(8, "big", signed=True):
                assert (topic, payload) == (b"", b"")
                break
            assert topic == TOPIC
            msgspec.msgpack.decode(payload)
            seqs.append(int.from_bytes(seq, "big"))
        assert seqs == list(range(len(seqs))) and seqs[-1] >= last
    finally:
        replay.close(linger=0)


async def test_resetting_the_prefix_cache_publishes_all_blocks_cleared(sim: Client, sub: zmq.asyncio.Socket) -> None:
    await subscribed(sim, sub)
    resp = await sim.post("/reset_prefix_cache")
    assert await resp.json() == {"success": True}
    while True:
        _, (_, events, _) = await receive(sub)
        if {"type": "AllBlocksCleared"} in events:
            break
    assert sim.app[ENGINE].pool.num_cached == 0
