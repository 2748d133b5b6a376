"""KV-cache events exactly as vLLM 0.32 publishes them (vllm/distributed/kv_events.py): the same msgspec
structs, encoded with msgpack, sent on a ZMQ PUB socket as (topic, 8-byte big-endian sequence number,
payload), the last `buffer_steps` batches kept for a ROUTER replay socket (a request is the 8-byte start
sequence; the answer is every kept batch from there, then an empty topic, sequence -1 and empty payload).

Unlike vLLM's publisher thread, this one sends from the event loop: several engines share one process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from itertools import count

import msgspec
import zmq
import zmq.asyncio

from iir_common.kv_events.structs import KVEvent, KVEventBatch

log = logging.getLogger("iir_simbackend.kv_events")

END_SEQ = (-1).to_bytes(8, "big", signed=True)


def _is_bind_endpoint(endpoint: str) -> bool:
    """vLLM binds wildcard and ipc/inproc endpoints and connects to the rest; a port 0 is bound too (so a
    test can take a free port)."""
    wildcard = "*" in endpoint or "::" in endpoint
    return wildcard or endpoint.startswith(("ipc://", "inproc://")) or endpoint.endswith(":0")


class ZmqEventPublisher:
    """PUB socket plus optional ROUTER replay socket, as vLLM's `ZmqEventPublisher`."""

    def __init__(
        self,
        endpoint: str,
        replay_endpoint: str | None = None,
        topic: str = "",
        buffer_steps: int = 10_000,
        hwm: int = 100_000,
        data_parallel_rank: int = 0,
    ) -> None:
        self._ctx = zmq.asyncio.Context.instance()
        self._pub = self._ctx.socket(zmq.PUB)
        self._pub.set_hwm(hwm)
        self.endpoint = self._open(self._pub, endpoint)
        self._replay: zmq.asyncio.Socket | None = None
        self.replay_endpoint: str | None = None
        if replay_endpoint:
            self._replay = self._ctx.socket(zmq.ROUTER)
            self._replay.bind(replay_endpoint)
            self.replay_endpoint = self._replay.getsockopt_string(zmq.LAST_ENDPOINT)
        self._topic = topic.encode()
        self._rank = data_parallel_rank
        self._seq = count()
        self._buffer: deque[tuple[int, bytes]] = deque(maxlen=buffer_steps)
        self._encoder = msgspec.msgpack.Encoder()
        self._replay_task: asyncio.Task[None] | None = None

    @staticmethod
    def _open(sock: zmq.asyncio.Socket, endpoint: str) -> str:
        if _is_bind_endpoint(endpoint):
            sock.bind(endpoint)
            return str(sock.getsockopt_string(zmq.LAST_ENDPOINT))
        sock.connect(endpoint)
        return endpoint

    def start(self) -> None:
        if self._replay is not None and self._replay_task is None:
            self._replay_task = asyncio.get_running_loop().create_task(self._serve_replay())

    def publish(self, ts: float, events: list[KVEvent]) -> None:
        """Sends one batch now (PUB never blocks: past the high-water mark ZMQ drops, as for vLLM)."""
        batch = KVEventBatch(ts=ts, events=events, data_parallel_rank=self._rank)
        seq = next(self._seq)
        payload = self._encoder.encode(batch)
        with contextlib.suppress(zmq.Again):
            self._pub.send_multipart((self._topic, seq.to_bytes(8, "big"), payload), flags=zmq.NOBLOCK)
        self._buffer.append((seq, payload))

    async def _serve_replay(self) -> None:
        assert self._replay is not None
        while True:
            frames = await self._replay.recv_multipart()
            if len(frames) != 3:
                log.warning("invalid replay request", extra={"frames": len(frames)})
                continue
            client, _, start = frames
            first = int.from_bytes(start, "big")
            for seq, payload in list(self._buffer):
                if seq >= first:
                    await self._replay.send_multipart((client, b"", self._topic, seq.to_bytes(8, "big"), payload))
            await self._replay.send_multipart((client, b"", b"", END_SEQ, b""))

    async def close(self) -> None:
        if self._replay_task is not None:
            self._replay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replay_task
        self._pub.close(linger=0)
        if self._replay is not None:
            self._replay.close(linger=0)
