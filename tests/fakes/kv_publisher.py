"""A stand-in for one vLLM engine's KV event publisher (vllm/distributed/kv_events.py, ZmqEventPublisher):
a PUB socket sending (topic, seq, payload), a ROUTER replaying its last `buffer_steps` batches from a
requested sequence number and ending with seq -1. Payloads are msgpack written as vLLM 0.32 writes a
KVEventBatch: [ts, [events as maps tagged by "type"], data_parallel_rank] (tests/data/kv_events_vllm.msgpack
is one recorded from the real engine)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import msgspec
import zmq
import zmq.asyncio

END_SEQ = (-1).to_bytes(8, "big", signed=True)


def stored(hashes: Sequence[int | bytes], medium: str | None = "GPU", parent: int | None = None) -> dict[str, Any]:
    return {
        "type": "BlockStored",
        "block_hashes": list(hashes),
        "parent_block_hash": parent,
        "token_ids": list(range(16 * len(hashes))),
        "block_size": 16,
        "lora_id": None,
        "medium": medium,
        "lora_name": None,
    }


def removed(hashes: Sequence[int | bytes], medium: str | None = "GPU") -> dict[str, Any]:
    return {"type": "BlockRemoved", "block_hashes": list(hashes), "medium": medium}


def cleared() -> dict[str, Any]:
    return {"type": "AllBlocksCleared"}


class FakeEngine:
    def __init__(
        self, pub_port: int = 0, replay_port: int = 0, buffer_steps: int = 10_000, topic: str = "kv-events"
    ) -> None:
        self.ctx = zmq.asyncio.Context()
        self.pub = self.ctx.socket(zmq.PUB)
        self.router = self.ctx.socket(zmq.ROUTER)
        for sock in (self.pub, self.router):
            sock.setsockopt(zmq.LINGER, 0)
        self.pub_port = self._bind(self.pub, pub_port)
        self.replay_port = self._bind(self.router, replay_port)
        self.buffer: deque[tuple[int, bytes]] = deque(maxlen=buffer_steps)
        self.topic = topic.encode()
        self.seq = 0
        self.replays = 0  # replay requests served
        self._encode = msgspec.msgpack.Encoder().encode
        self._task = asyncio.create_task(self._serve_replay())

    @staticmethod
    def _bind(sock: zmq.asyncio.Socket, port: int) -> int:
        if port:
            sock.bind(f"tcp://127.0.0.1:{port}")
            return port
        return sock.bind_to_random_port("tcp://127.0.0.1")

    @property
    def pub_address(self) -> str:
        return f"tcp://127.0.0.1:{self.pub_port}"

    @property
    def replay_address(self) -> str:
        return f"tcp://127.0.0.1:{self.replay_port}"

    async def publish(self, *events: dict[str, Any], live: bool = True, ts: float | None = None) -> int:
        """One batch; `live=False` keeps it for replay only (a message the subscriber missed). Its seq."""
        payload = self._encode([time.time() if ts is None else ts, list(events), 0])
        seq, self.seq = self.seq, self.seq + 1
        self.buffer.append((seq, payload))
        if live:
            await self.pub.send_multipart((self.topic, seq.to_bytes(8, "big"), payload))
        return seq

    async def _serve_replay(self) -> None:
        while True:
            client, _, start = await self.router.recv_multipart()
            self.replays += 1
            first = int.from_bytes(start, "big")
            for seq, payload in list(self.buffer):
                if seq >= first:
                    await self.router.send_multipart((client, b"", self.topic, seq.to_bytes(8, "big"), payload))
            await self.router.send_multipart((client, b"", b"", END_SEQ, b""))

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.pub.close(linger=0)
        self.router.close(linger=0)
        self.ctx.term()
