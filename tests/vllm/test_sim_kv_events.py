"""The simulated engine's KV events decoded by the real vLLM 0.32 (`vllm.distributed.kv_events.KVEventBatch`,
in the venv `make test-vllm` builds): every batch the simulator published (stores, evictions, a LoRA
request's, a reset) decodes to what the simulator meant, and its first block hashes are the ones vLLM's own
`hash_block_tokens` gives those tokens with vLLM's default algorithm and seed."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import zmq
import zmq.asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from iir_common.kv_events.structs import KVEventBatch
from iir_dev import real_vllm
from iir_simbackend.app import ENGINE, create_app
from iir_simbackend.settings import SimSettings
from tests.waiting import unavailable

Client = TestClient[web.Request, web.Application]
ADAPTER, ADAPTER_PATH = "sql-lora", "org/sql-lora"

DECODE = """
import json, sys
import msgspec
from vllm.distributed.kv_events import KVEventBatch
from vllm.utils.hashing import sha256
from vllm.v1.core import kv_cache_utils

kv_cache_utils.init_none_hash(sha256)
decoder = msgspec.msgpack.Decoder(KVEventBatch)
batches = [decoder.decode(bytes.fromhex(line)) for line in sys.stdin.read().split()]
hashes = {}
for batch in batches:
    for event in batch.events:
        if type(event).__name__ == "BlockStored" and event.parent_block_hash is None:
            extra = (("lora", event.lora_name, sys.argv[1]),) if event.lora_name else None
            h = kv_cache_utils.hash_block_tokens(sha256, None, event.token_ids[:16], extra)
            hashes[str(event.block_hashes[0])] = int.from_bytes(h, "big") & ((1 << 64) - 1)
print(json.dumps({"batches": msgspec.to_builtins(batches), "hashes": hashes}))
"""


@pytest.fixture
async def sim() -> AsyncIterator[Client]:
    settings = SimSettings(
        models="m",
        engine="llama-3.1-8b-h100",
        time_scale=0.02,
        kv_cache_blocks=24,  # small: the requests below evict one another's blocks
        max_model_len=360,
        max_loras=1,
        kv_events_endpoint="tcp://127.0.0.1:0",
        kv_events_replay_endpoint="tcp://127.0.0.1:0",
    )
    async with TestClient(TestServer(create_app(settings))) as client:
        yield client


async def _payloads(endpoint: str) -> list[bytes]:
    sock = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    sock.connect(endpoint)
    out: list[bytes] = []
    try:
        await sock.send_multipart([b"", (0).to_bytes(8, "big")])
        while True:
            assert await sock.poll(10_000), "no answer from the replay socket"
            _, _, seq, payload = await sock.recv_multipart()
            if int.from_bytes(seq, "big", signed=True) == -1:
                return out
            out.append(payload)
    finally:
        sock.close(linger=0)


async def test_real_vllm_decodes_the_simulated_events(sim: Client) -> None:
    python = real_vllm.python()
    if not python.exists():
        unavailable(f"no vLLM venv at {python} (make test-vllm builds it)")
    load = {"lora_name": ADAPTER, "lora_path": ADAPTER_PATH}
    assert (await sim.post("/v1/load_lora_adapter", json=load)).status == 200
    for i, model in enumerate(["m", "m", ADAPTER, "m", "m"]):
        text = f"request {i} " + "about caches and routers and replicas " * 12
        body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 20}
        assert (await sim.post("/v1/chat/completions", json=body)).status == 200
    assert await (await sim.post("/reset_prefix_cache")).json() == {"success": True}
    publisher = sim.app[ENGINE].publisher
    assert publisher is not None and publisher.replay_endpoint is not None
    payloads = await _payloads(publisher.replay_endpoint)

    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}  # vLLM's default seed
    done = await asyncio.to_thread(
        subprocess.run,
        [str(python), "-c", DECODE, ADAPTER_PATH],
        input="\n".join(p.hex() for p in payloads),
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    real: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    ours = json.loads(json.dumps([msgspec.to_builtins(msgspec.msgpack.decode(p, type=KVEventBatch)) for p in payloads]))
    assert real["batches"] == ours
    kinds = {e["type"] for batch in ours for e in batch[1]}
    assert kinds == {"BlockStored", "BlockRemoved", "AllBlocksCleared"}
    assert any(e.get("lora_name") == ADAPTER for batch in ours for e in batch[1])
    assert real["hashes"] and all(int(ours_hash) == theirs for ours_hash, theirs in real["hashes"].items())
