"""The registry's KV event subscriber against a real ZeroMQ publisher speaking vLLM's protocol: payloads
decoded as the real engine writes them, blocks indexed per replica and tier, gaps filled from the replay
socket, a replica cleared on AllBlocksCleared, on lost events and when its engine restarts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
import zmq.asyncio

from iir.v1 import registry_pb2
from iir_common.kv_events.structs import AllBlocksCleared, BlockRemoved, BlockStored
from iir_registry.kv_events.index import BlockIndex
from iir_registry.kv_events.publisher import KvPublisher
from iir_registry.kv_events.stats import KvStats
from iir_registry.kv_events.subscriber import KvSubscriber, follow
from iir_registry.kv_events.wire import Stored, block_ints, decode_batch
from tests.fakes.kv_publisher import FakeEngine, cleared, removed, stored
from tests.waiting import eventually

URL = "http://10.0.0.7:8000"
RECORDED = Path(__file__).resolve().parents[1] / "data" / "kv_events_vllm.msgpack"


def test_a_batch_the_real_engine_encoded_is_decoded_with_its_hashes_as_64_bit_ints() -> None:
    """Recorded from vLLM 0.32's own KVEventBatch (int hashes, a bytes digest, CPU medium, extra keys)."""
    batch = decode_batch(RECORDED.read_bytes())
    assert batch.ts == 1767323045.25 and batch.data_parallel_rank == 0
    first, second, gone, reset = batch.events
    assert isinstance(first, BlockStored) and block_ints(first.block_hashes) == [1, 2**64 - 1]
    assert isinstance(second, BlockStored) and second.medium == "CPU" and second.lora_name == "sql"
    assert block_ints(second.block_hashes) == [6920916392769383918]  # sha256(b"block")'s low 64 bits
    assert isinstance(gone, BlockRemoved) and isinstance(reset, AllBlocksCleared)


def test_the_older_array_layout_of_events_is_read_too() -> None:
    payload = msgspec.msgpack.encode([2.5, [["BlockStored", [-1, 7], None, [1] * 32, 16, None], ["AllBlocksCleared"]]])
    batch = decode_batch(payload)
    assert isinstance(batch.events[0], Stored)
    assert block_ints(batch.events[0].block_hashes) == [2**64 - 1, 7]  # a negative hash: its two's complement
    assert batch.events[0].medium is None and type(batch.events[1]).__name__ == "LegacyAllBlocksCleared"


class Pushed:
    """A KvPublisher that pushes into a list (what watchers would get)."""

    def __init__(self) -> None:
        self.updates: list[registry_pb2.KvBlockUpdate] = []
        self.publisher = KvPublisher(self.updates.extend, interval_s=0.005)


@pytest.fixture
async def engine() -> AsyncIterator[FakeEngine]:
    e = FakeEngine()
    yield e
    await e.close()


@contextlib.asynccontextmanager
async def following(
    engine: FakeEngine, index: BlockIndex, stats: KvStats, replay: bool = True
) -> AsyncIterator[KvSubscriber]:
    ctx = zmq.asyncio.Context()
    sub = KvSubscriber(URL, engine.pub_address, engine.replay_address if replay else "", index, stats, ctx)
    task = asyncio.create_task(follow(sub))
    try:
        yield sub
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        ctx.destroy(linger=0)


async def caught_up(engine: FakeEngine, sub: KvSubscriber) -> None:
    """Publishes empty batches until the subscriber has applied the engine's last one live (a subscription
    takes a moment to reach the publisher; what it missed meanwhile comes from the replay socket)."""

    async def seen() -> bool:
        await engine.publish()
        await asyncio.sleep(0.02)
        return sub.next == engine.seq

    await eventually(seen)


def gpu(index: BlockIndex) -> set[int]:
    return index.held(URL)[0]


async def test_stored_removed_and_cleared_events_reach_the_index_by_tier(engine: FakeEngine) -> None:
    index, stats = BlockIndex(Pushed().publisher), KvStats()
    async with following(engine, index, stats) as sub:
        await caught_up(engine, sub)
        await engine.publish(stored([1, 2, 3]), stored([b"\x00" * 24 + (9).to_bytes(8, "big")], medium="CPU"))
        await engine.publish(removed([2]))
        await eventually(lambda: gpu(index) == {1, 3} and index.held(URL)[1] == {9})
        assert sorted(index.holders(3)) == [(URL, False)]
        await engine.publish(cleared(), stored([4]))
        await eventually(lambda: gpu(index) == {4} and not index.held(URL)[1])
        assert stats.cleared == 1


async def test_what_the_engine_published_before_the_registry_came_is_replayed(engine: FakeEngine) -> None:
    await engine.publish(stored([1, 2]))
    await engine.publish(removed([1]), stored([5]))
    index = BlockIndex(Pushed().publisher)
    async with following(engine, index, KvStats()):
        await eventually(lambda: gpu(index) == {2, 5})


async def test_a_missed_batch_is_recovered_from_the_replay_socket(engine: FakeEngine) -> None:
    index, stats = BlockIndex(Pushed().publisher), KvStats()
    async with following(engine, index, stats) as sub:
        await caught_up(engine, sub)
        recovered = stats.gaps_recovered
        await engine.publish(stored([10, 11]), live=False)  # never reaches the subscriber live
        await engine.publish(stored([12]))
        await eventually(lambda: gpu(index) == {10, 11, 12})
        assert stats.gaps_recovered == recovered + 1
        assert sub.next == engine.seq


async def test_events_the_engine_no_longer_keeps_clear_the_replica_and_rebuild_it() -> None:
    engine = FakeEngine(buffer_steps=2)
    index, stats = BlockIndex(Pushed().publisher), KvStats()
    try:
        async with following(engine, index, stats) as sub:
            await caught_up(engine, sub)
            await engine.publish(stored([1, 2]))
            await eventually(lambda: gpu(index) == {1, 2})
            for _ in range(3):  # block 1 was evicted in there, but the buffer no longer says so
                await engine.publish(removed([1]), live=False)
            await engine.publish(stored([3]))
            await eventually(lambda: stats.gaps_lost == 1)
            await eventually(lambda: gpu(index) == {3})  # block 2 may be held, but nothing says so now
    finally:
        await engine.close()


async def test_without_a_replay_socket_a_gap_clears_the_replica(engine: FakeEngine) -> None:
    index, stats = BlockIndex(Pushed().publisher), KvStats()
    async with following(engine, index, stats, replay=False) as sub:
        await caught_up(engine, sub)
        await engine.publish(stored([1]))
        await eventually(lambda: gpu(index) == {1})
        await engine.publish(removed([1]), live=False)
        await engine.publish(stored([2]))
        await eventually(lambda: gpu(index) == {2})


async def test_a_restarted_engine_replaces_what_the_old_one_held() -> None:
    old = FakeEngine()
    index, stats = BlockIndex(Pushed().publisher), KvStats()
    async with following(old, index, stats) as sub:
        await caught_up(old, sub)
        for block in range(5):
            await old.publish(stored([100 + block]))
        await eventually(lambda: len(gpu(index)) == 5)
        pub_port, replay_port = old.pub_port, old.replay_port
        await old.close()
        new = FakeEngine(pub_port, replay_port)  # the same pod, a new engine: sequence numbers from 0
        try:
            await new.publish(stored([7]))
            await eventually(lambda: gpu(index) == {7})
            assert stats.restarts == 1
            await new.publish(stored([8]))
            await eventually(lambda: gpu(index) == {7, 8})
        finally:
            await new.close()


async def test_the_same_engine_after_a_dropped_connection_keeps_what_it_held(engine: FakeEngine) -> None:
    index, stats = BlockIndex(Pushed().publisher), KvStats()
    async with following(engine, index, stats) as sub:
        await caught_up(engine, sub)
        await engine.publish(stored([1, 2]))
        await eventually(lambda: gpu(index) == {1, 2})
        await sub.connected()  # what a reconnection runs: the engine still has the last batch applied
        await engine.publish(stored([3]))
        await eventually(lambda: gpu(index) == {1, 2, 3})
        assert stats.restarts == 0


async def test_a_payload_not_understood_clears_the_replica(engine: FakeEngine) -> None:
    index, stats = BlockIndex(Pushed().publisher), KvStats()
    async with following(engine, index, stats) as sub:
        await caught_up(engine, sub)
        await engine.publish(stored([1]))
        await eventually(lambda: gpu(index) == {1})
        seq, engine.seq = engine.seq, engine.seq + 1
        await engine.pub.send_multipart((engine.topic, seq.to_bytes(8, "big"), b"\xc1not msgpack"))
        await eventually(lambda: not gpu(index) and stats.decode_errors == 1)
        await engine.publish(stored([2]))
        await eventually(lambda: gpu(index) == {2})
