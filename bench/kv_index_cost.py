"""What precise prefix routing costs per KV event and per request, in one process (no sockets):

- registry: decoding a vLLM payload holding one BlockStored of 16 hashes (256 token ids, as vLLM sends
  them), the subscriber applying it (index + pending window), the window flushed into a WatchEvent;
- per watcher: serialising that event (gRPC does it once per stream), and the gateway applying it to
  its KvIndex;
- bytes on the Watch stream per BlockStored, and per update of one event alone;
- the snapshot a new watcher gets of 8 replicas × 50k blocks: built, its size, applied by a gateway;
- per request: `KvIndex.match_lengths` over 8 replicas for a prompt of N blocks, in an index of 400k blocks.

Usage: python bench/kv_index_cost.py [--events 20000] [--window 50]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import time
from collections.abc import Callable

import msgspec
import zmq.asyncio

from iir.v1 import registry_pb2
from iir_gateway.picking.kv_index import KvIndex
from iir_registry.kv_events.index import BlockIndex
from iir_registry.kv_events.publisher import KvPublisher, snapshot_events
from iir_registry.kv_events.stats import KvStats
from iir_registry.kv_events.subscriber import KvSubscriber
from iir_registry.kv_events.wire import decode_batch

URL = "http://10.0.0.7:8000"


def payload(rng: random.Random, blocks: int = 16) -> bytes:
    event = {
        "type": "BlockStored",
        "block_hashes": [rng.getrandbits(64) for _ in range(blocks)],
        "parent_block_hash": rng.getrandbits(64),
        "token_ids": [rng.randrange(128_000) for _ in range(16 * blocks)],
        "block_size": 16,
        "lora_id": None,
        "medium": "GPU",
        "lora_name": None,
    }
    return msgspec.msgpack.encode([time.time(), [event], 0])


def best_us(fn: Callable[[], object], n: int, repeat: int = 5) -> float:
    """The fastest of `repeat` runs of `fn`, per item of `n` (a shared, busy machine adds only noise)."""
    runs = []
    gc.collect()  # what building the data left for the collector is not charged to the first run
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return min(runs) / n * 1e6


async def registry_side(events: int, window: int) -> dict[str, float]:
    rng = random.Random(1)
    payloads = [payload(rng) for _ in range(events)]

    def decode_all() -> None:
        for p in payloads:
            decode_batch(p)

    decode = best_us(decode_all, events)

    pushed: list[list[registry_pb2.KvBlockUpdate]] = []
    publisher = KvPublisher(pushed.append, interval_s=3600, max_hashes=10**9)
    ctx = zmq.asyncio.Context()
    seq = 0

    def subscriber_path() -> None:  # as the subscriber runs: decode, index, window; a flush per window
        nonlocal seq
        pushed.clear()
        sub = KvSubscriber(URL, "", "", BlockIndex(publisher), KvStats(), ctx)
        for seq, p in enumerate(payloads):
            sub._apply(seq, decode_batch(p))
            if seq % window == window - 1:
                publisher.flush()

    applied = best_us(subscriber_path, events)
    ctx.destroy(linger=0)
    watch_events = [registry_pb2.WatchEvent(type=registry_pb2.WatchEvent.KV_BLOCKS, kv=u) for u in pushed]
    wire = [e.SerializeToString() for e in watch_events]
    serialise = best_us(lambda: [e.SerializeToString() for e in watch_events], events)

    def gateway_path() -> None:  # as a gateway worker runs: parse the event, apply it
        gateway = KvIndex()
        for w in wire:
            gateway.apply(registry_pb2.WatchEvent.FromString(w).kv)

    gateway_apply = best_us(gateway_path, events)
    one = registry_pb2.WatchEvent(
        type=registry_pb2.WatchEvent.KV_BLOCKS,
        kv=[registry_pb2.KvBlockUpdate(url=URL, stored=[rng.getrandbits(64) for _ in range(16)])],
    )
    return {
        "registry_decode_us": decode,
        "registry_decode_index_window_flush_us": applied,
        "registry_serialise_per_watcher_us": serialise,
        "gateway_parse_apply_us": gateway_apply,
        "watch_bytes_per_event_in_window": sum(map(len, wire)) / events,
        "watch_bytes_single_update": len(one.SerializeToString()),
        "engine_payload_bytes": sum(map(len, payloads)) / events,
    }


async def snapshot_side(replicas: int = 8, blocks: int = 50_000) -> dict[str, float]:
    """The whole index a new watcher gets: built once per watcher, then applied by the gateway."""
    rng = random.Random(3)
    index = BlockIndex(KvPublisher(lambda _: None, interval_s=3600, max_hashes=10**12))
    for i in range(replicas):
        index.store(f"http://10.0.0.{i}:8000", [rng.getrandbits(64) for _ in range(blocks)])
    start = time.perf_counter()
    events = snapshot_events(index)
    build = time.perf_counter() - start
    wire = [e.SerializeToString() for e in events]
    start = time.perf_counter()
    gateway = KvIndex()
    for w in wire:
        gateway.apply(registry_pb2.WatchEvent.FromString(w).kv)
    apply = time.perf_counter() - start
    return {
        f"snapshot_{replicas}x{blocks}_build_ms": build * 1e3,
        f"snapshot_{replicas}x{blocks}_mib": sum(map(len, wire)) / 2**20,
        f"snapshot_{replicas}x{blocks}_events": len(events),
        f"snapshot_{replicas}x{blocks}_gateway_apply_ms": apply * 1e3,
    }


def request_side(blocks: int, replicas: int = 8, rounds: int = 500) -> dict[str, float]:
    rng = random.Random(2)
    urls = [f"http://10.0.0.{i}:8000" for i in range(replicas)]
    prompt = [rng.getrandbits(64) for _ in range(blocks)]
    index = KvIndex()
    index.apply([registry_pb2.KvBlockUpdate(url=u, cleared=True) for u in urls])
    # Other prompts' blocks around, as a busy index holds (a dict of 400k entries, not a tiny one).
    index.apply([registry_pb2.KvBlockUpdate(url=u, stored=[rng.getrandbits(64) for _ in range(50_000)]) for u in urls])
    out = {}
    cases = {
        "none": [],
        "one_holds_all": [registry_pb2.KvBlockUpdate(url=urls[0], stored=prompt)],
        "others_hold_half": [registry_pb2.KvBlockUpdate(url=u, stored=prompt[: blocks // 2]) for u in urls[1:]],
    }
    for name, updates in cases.items():
        index.apply(updates)

        def match() -> None:
            for _ in range(rounds):
                index.match_lengths(prompt, urls)

        out[f"match_{blocks}_blocks_{name}_us"] = best_us(match, rounds)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--window", type=int, default=50, help="BlockStored events per 20 ms window")
    args = parser.parse_args()
    figures = asyncio.run(registry_side(args.events, args.window))
    figures |= asyncio.run(snapshot_side())
    for blocks in (64, 1000, 4000):
        figures |= request_side(blocks)
    width = max(map(len, figures))
    for name, value in figures.items():
        print(f"{name:<{width}}  {value:10.2f}")


if __name__ == "__main__":
    main()
