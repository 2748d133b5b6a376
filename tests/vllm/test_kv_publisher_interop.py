"""The registry's KV event subscriber against vLLM's own publisher (vllm.distributed.kv_events.
ZmqEventPublisher, run in the real vLLM's environment without an engine): its framing, its msgpack, its
replay socket, and a restart on the same ports."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import zmq.asyncio

from iir_dev import real_vllm
from iir_registry.kv_events.index import BlockIndex
from iir_registry.kv_events.publisher import KvPublisher
from iir_registry.kv_events.stats import KvStats
from iir_registry.kv_events.subscriber import KvSubscriber, follow
from tests.waiting import eventually

URL = "http://127.0.0.1:8000"
# Reads commands from stdin ("stored 1 2", "stored_cpu 9", "removed 2", "cleared") and publishes each as
# one KVEventBatch through vLLM's publisher, bound as the operator binds it (tcp://*:port).
PUBLISHER = """
import sys, time
from vllm.distributed.kv_events import AllBlocksCleared, BlockRemoved, BlockStored, KVEventBatch, ZmqEventPublisher
pub = ZmqEventPublisher(0, endpoint=f"tcp://*:{sys.argv[1]}", replay_endpoint=f"tcp://*:{sys.argv[2]}",
                        topic="kv-events")
print("ready", flush=True)
for line in sys.stdin:
    kind, *hashes = line.split()
    hashes = [int(h) for h in hashes]
    if kind.startswith("stored"):
        event = BlockStored(block_hashes=hashes, parent_block_hash=None, token_ids=list(range(16 * len(hashes))),
                            block_size=16, lora_id=None, medium="CPU" if kind.endswith("cpu") else "GPU",
                            lora_name=None)
    elif kind == "removed":
        event = BlockRemoved(block_hashes=hashes, medium="GPU")
    else:
        event = AllBlocksCleared()
    pub.publish(KVEventBatch(ts=time.time(), events=[event]))
    print("sent", flush=True)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Engine:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def send(self, command: str) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{command}\n".encode())
        await self.proc.stdin.drain()
        assert (await asyncio.wait_for(self.proc.stdout.readline(), 30)).strip() == b"sent"


@contextlib.asynccontextmanager
async def vllm_publisher(pub: int, replay: int) -> AsyncIterator[Engine]:
    proc = await asyncio.create_subprocess_exec(
        str(real_vllm.python()),
        "-c",
        PUBLISHER,
        str(pub),
        str(replay),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        assert (await asyncio.wait_for(proc.stdout.readline(), 120)).strip() == b"ready"
        yield Engine(proc)
    finally:
        proc.kill()
        await proc.wait()


async def test_the_subscriber_follows_vllms_own_publisher() -> None:
    pub, replay = _free_port(), _free_port()
    index, stats = BlockIndex(KvPublisher(lambda _: None, interval_s=0.01)), KvStats()
    ctx = zmq.asyncio.Context()
    sub = KvSubscriber(URL, f"tcp://127.0.0.1:{pub}", f"tcp://127.0.0.1:{replay}", index, stats, ctx)
    task: asyncio.Task[None] | None = None
    try:
        async with vllm_publisher(pub, replay) as engine:
            await engine.send("stored 1 2 3")  # before the registry follows: its replay brings it
            task = asyncio.create_task(follow(sub))
            await eventually(lambda: index.held(URL)[0] == {1, 2, 3}, timeout=30)
            await engine.send("removed 2")
            await engine.send("stored_cpu 9")
            await eventually(lambda: index.held(URL) == ({1, 3}, {9}), timeout=30)
            await engine.send("cleared")
            await eventually(lambda: index.held(URL) == (set(), set()), timeout=30)
            await engine.send("stored 4")
            await eventually(lambda: index.held(URL)[0] == {4}, timeout=30)
        async with vllm_publisher(pub, replay) as engine:  # the engine restarted: sequence numbers from 0
            await engine.send("stored 7")
            await eventually(lambda: index.held(URL)[0] == {7}, timeout=30)
            assert stats.restarts == 1 and stats.decode_errors == 0
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        ctx.destroy(linger=0)
