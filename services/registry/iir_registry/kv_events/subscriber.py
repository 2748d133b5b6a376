"""One replica's KV events, followed into the index: a ZeroMQ SUB to its PUB socket, and its ROUTER replay
socket (vLLM's protocol: send the first sequence number wanted as 8 bytes big-endian; receive
(topic, seq, payload) frames until seq is -1) to fill gaps.

Sequence numbers run from 0 in each engine process. A batch is applied when its number is the next one; a
later number is a gap, filled from the replay socket (or, when the engine no longer has it, the replica is
cleared and rebuilt from what the engine still keeps); an earlier number is a batch already applied (same
timestamp or older) or a new engine (newer timestamp: cleared, rebuilt from its replay). After the TCP
connection drops and comes back, the batch last applied is asked for again: the same engine answers it
with the same timestamp and goes on from there; any other answer is a new engine.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec
import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from iir_registry.kv_events.index import BlockIndex
from iir_registry.kv_events.stats import KvStats
from iir_registry.kv_events.wire import Batch, Removed, Stored, block_ints, decode_batch, off_gpu

log = logging.getLogger(__name__)

END = -1
RCVHWM = 100_000  # as vLLM's publisher: a replay may take a while, the live batches wait meanwhile
Frames = list[tuple[int, bytes]]


def _socket(ctx: zmq.asyncio.Context, kind: int, address: str) -> zmq.asyncio.Socket:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if address.startswith("tcp://["):
        sock.setsockopt(zmq.IPV6, 1)
    return sock


class KvSubscriber:
    def __init__(
        self,
        url: str,
        pub: str,
        replay: str,
        index: BlockIndex,
        stats: KvStats,
        ctx: zmq.asyncio.Context,
        topic: str = "",
        replay_timeout_s: float = 2.0,
    ) -> None:
        self.url = url
        self.pub = pub
        self.replay = replay
        self.index = index
        self.stats = stats
        self.ctx = ctx
        self.topic = topic.encode()
        self.replay_timeout_ms = int(replay_timeout_s * 1000)
        self.next: int | None = None  # the sequence number expected next; None before the first batch
        self.last_ts = 0.0  # the timestamp of the batch applied last
        self._warned = False

    async def run(self) -> None:
        sub = _socket(self.ctx, zmq.SUB, self.pub)
        sub.setsockopt(zmq.RCVHWM, RCVHWM)
        sub.subscribe(self.topic)
        monitor = sub.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        sub.connect(self.pub)
        poller = zmq.asyncio.Poller()
        poller.register(sub, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        try:
            while True:
                ready = dict(await poller.poll())
                if monitor in ready:
                    event = parse_monitor_message(await monitor.recv_multipart())
                    if event["event"] == zmq.EVENT_CONNECTED:
                        await self.connected()
                if sub in ready:
                    await self._drain(sub)
        finally:
            sub.disable_monitor()
            monitor.close(linger=0)
            sub.close(linger=0)

    async def _drain(self, sub: zmq.asyncio.Socket) -> None:
        while True:
            try:
                frames = await sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            await self.receive(frames)

    async def connected(self) -> None:
        """The SUB socket (re)connected: the engine is there; catch up with it."""
        self.index.follow(self.url)
        if self.next is None:
            self._apply_all(await self.fetch(0) or [])
            return
        frames = await self.fetch(self.next - 1)
        if frames and frames[0][0] == self.next - 1 and self._same(frames[0][1]):
            self._apply_all(frames[1:])
            return
        # Another engine, or one that cannot tell (no replay, or the batch is gone from its buffer).
        log.info("KV events: not the engine followed before; clearing the endpoint", extra={"url": self.url})
        self.stats.restarts += 1
        self.index.clear(self.url)
        self.next = None
        self._apply_all((frames if frames and frames[0][0] == 0 else await self.fetch(0)) or [])

    def _same(self, payload: bytes) -> bool:
        """Whether the batch is the one applied last (the same engine still runs)."""
        batch = self._decode(payload)
        return batch is not None and batch.ts == self.last_ts

    async def receive(self, frames: list[bytes]) -> None:
        """One live message: (topic, seq, payload)."""
        if len(frames) < 3:
            return
        seq = int.from_bytes(frames[-2], "big", signed=True)
        batch = self._decode(frames[-1])
        expected = 0 if self.next is None else self.next
        if seq == expected:
            self._apply(seq, batch)
        elif seq > expected:
            await self._fill_gap(expected, seq, batch)
        elif batch is not None and batch.ts > self.last_ts:
            log.info("KV events: the engine restarted; clearing the endpoint", extra={"url": self.url})
            self.stats.restarts += 1
            self.index.clear(self.url)
            self.next = None
            self._apply_all(await self.fetch(0) or [(seq, frames[-1])])
        # else: a batch a replay applied already

    async def _fill_gap(self, expected: int, seq: int, batch: Batch | None) -> None:
        frames = await self.fetch(expected)
        if frames and frames[0][0] == expected:
            self.stats.gaps_recovered += 1
            self._apply_all(frames)
        else:
            # The batches in between are gone: what this replica holds is unknown beyond what the engine's
            # buffer still tells (all of it, from its oldest batch), or this batch without a replay.
            log.warning("KV events lost; rebuilding the endpoint", extra={"url": self.url, "from": expected})
            self.stats.gaps_lost += 1
            self.index.clear(self.url)
            if frames:
                self._apply_all(frames)
            else:
                self._apply(seq, batch)
        if self.next is not None and seq >= self.next:  # not in the replay (only when the buffer is tiny)
            self._apply(seq, batch)

    def _apply_all(self, frames: Frames) -> None:
        for seq, payload in frames:
            if self.next is None or seq >= self.next:
                self._apply(seq, self._decode(payload))

    def _decode(self, payload: bytes) -> Batch | None:
        try:
            return decode_batch(payload)
        except msgspec.DecodeError as exc:
            self.stats.decode_errors += 1
            if not self._warned:
                self._warned = True
                log.warning("KV event payload not understood", extra={"url": self.url, "error": str(exc)[:300]})
            return None

    def _apply(self, seq: int, batch: Batch | None) -> None:
        self.next = seq + 1
        stats = self.stats
        stats.batches += 1
        if batch is None:  # what it said is unknown: what the replica holds is too
            self.index.clear(self.url)
            return
        self.last_ts = batch.ts
        index, url = self.index, self.url
        for event in batch.events:
            if isinstance(event, Stored):
                index.store(url, block_ints(event.block_hashes), off_gpu(event.medium))
                stats.stored += 1
            elif isinstance(event, Removed):
                index.remove(url, block_ints(event.block_hashes), off_gpu(event.medium))
                stats.removed += 1
            else:
                index.clear(url)
                stats.cleared += 1

    async def fetch(self, start: int) -> Frames | None:
        """The engine's buffered batches from `start` on (from its oldest when it has no longer kept
        `start`); None when there is no replay socket or it does not answer."""
        if not self.replay:
            return None
        sock = _socket(self.ctx, zmq.DEALER, self.replay)
        sock.connect(self.replay)
        try:
            await sock.send_multipart([b"", start.to_bytes(8, "big")])
            frames: Frames = []
            while True:
                if not await sock.poll(self.replay_timeout_ms):
                    log.warning("KV event replay did not answer", extra={"url": self.url, "replay": self.replay})
                    return None
                reply = await sock.recv_multipart()  # b"", topic, seq, payload
                if len(reply) < 4:
                    continue
                seq = int.from_bytes(reply[2], "big", signed=True)
                if seq == END:
                    return frames
                frames.append((seq, reply[3]))
        finally:
            sock.close(linger=0)


async def follow(subscriber: KvSubscriber, retry_s: float = 1.0) -> None:
    """Runs a subscriber until cancelled: a failure is logged and it starts again (its replica's blocks stay;
    the reconnection tells whether the engine is the same)."""
    while True:
        try:
            await subscriber.run()
        except Exception as exc:  # one replica's trouble must not end its following
            log.warning("KV event subscriber failed", extra={"url": subscriber.url, "error": repr(exc)[:300]})
            await asyncio.sleep(retry_s)
