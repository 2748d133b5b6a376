"""Replays a multi-turn chat workload on simulated vLLM replicas under each endpoint-picking policy.

Replicas batch continuously (decode step = 8 ms + 0.35 ms per running sequence, up to 48 sequences),
prefill only what their prefix cache lacks (0.04 ms per token, LRU cache of 16-token blocks), and
report their queue and KV cache use once a second, as the registry's scrape does. The picking code is
the gateway's own (`iir_gateway.picking`). Conversations share one of a few long system prompts and
grow turn by turn, so prompts share long prefixes. Prints TTFT p50/p99, throughput and prefix-cache
hit rate per policy; writes bench/results/picking_simulator.json.
Usage: .venv/bin/python bench/picking_simulator.py [--replicas 4] [--conversations 500] [--seeds 3]
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import random
import statistics
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path

from iir_gateway.picking.base import PickRequest
from iir_gateway.picking.policies import POLICIES, Scheduler
from iir_gateway.picking.prefix import prefix_blocks
from iir_gateway.picking.state import EndpointStates

RESULTS = Path(__file__).resolve().parent / "results"
BLOCK = 16
DECODE_BASE_MS, DECODE_PER_SEQ_MS, PREFILL_PER_TOKEN_MS = 8.0, 0.35, 0.04
MAX_BATCH, CACHE_BLOCKS, KV_TOKENS = 48, 6000, 150_000
SCRAPE_MS = 1000.0


@dataclass
class Request:
    conv: int
    turn: int
    words: list[str]
    output: int
    arrival: float
    first_token: float = -1.0
    left: int = 0
    cached: int = 0


@dataclass
class Replica:
    url: str
    waiting: deque[Request] = field(default_factory=deque)
    running: list[Request] = field(default_factory=list)
    cache: OrderedDict[int, None] = field(default_factory=OrderedDict)
    busy: bool = False


def word_blocks(words: list[str]) -> list[int]:
    out, prev = [], 0
    for i in range(0, len(words) // BLOCK * BLOCK, BLOCK):
        prev = hash((prev, tuple(words[i : i + BLOCK])))
        out.append(prev)
    return out


class Conversation:
    def __init__(self, cid: int, rng: random.Random, system: list[str]) -> None:
        self.cid = cid
        self.turns = rng.randint(4, 8)
        self.history: list[tuple[str, list[str]]] = [("system", system)]
        self.rng = rng

    def next_request(self, turn: int, now: float) -> Request:
        user = [f"c{self.cid}t{turn}u{i}" for i in range(self.rng.randint(40, 160))]
        self.history.append(("user", user))
        words = [w for _, part in self.history for w in part]
        return Request(self.cid, turn, words, self.rng.randint(60, 250), now)

    def answered(self, request: Request) -> None:
        self.history.append(("assistant", [f"c{self.cid}t{request.turn}r{i}" for i in range(request.output)]))


def simulate(policy: str, replicas: int, conversations: int, seed: int, rate_per_s: float) -> dict[str, float]:
    rng = random.Random(seed)
    systems = [[f"app{a}w{i}" for i in range(1200)] for a in range(6)]
    states = EndpointStates()
    scheduler = Scheduler(policy, states)
    reps = {f"http://replica-{i}": Replica(f"http://replica-{i}") for i in range(replicas)}
    urls = list(reps)
    events: list[tuple[float, int, str, object]] = []
    seq = itertools.count()
    convs: dict[int, Conversation] = {}
    done: list[Request] = []
    cache_lookups = cache_hits = 0

    def push(t: float, kind: str, payload: object) -> None:
        heapq.heappush(events, (t, next(seq), kind, payload))

    t = 0.0
    for cid in range(conversations):
        t += rng.expovariate(rate_per_s) * 1000
        convs[cid] = Conversation(cid, rng, systems[rng.randrange(len(systems))])
        push(t, "turn", (cid, 0))
    push(0.0, "scrape", None)

    def kv_use(rep: Replica) -> float:
        return min(1.0, sum(len(r.words) + (r.output - r.left) for r in rep.running) / KV_TOKENS)

    def step(rep: Replica, now: float) -> None:
        nonlocal cache_lookups, cache_hits
        admitted = []
        while rep.waiting and len(rep.running) + len(admitted) < MAX_BATCH:
            r = rep.waiting.popleft()
            blocks = word_blocks(r.words)
            hit = 0
            for b in blocks:
                if b not in rep.cache:
                    break
                hit += 1
            r.cached = hit * BLOCK
            cache_lookups += len(r.words)
            cache_hits += r.cached
            for b in blocks:
                rep.cache[b] = None
                rep.cache.move_to_end(b)
            while len(rep.cache) > CACHE_BLOCKS:
                rep.cache.popitem(last=False)
            admitted.append(r)
        batch = len(rep.running) + len(admitted)
        if batch == 0:
            rep.busy = False
            return
        prefill = sum(len(r.words) - r.cached for r in admitted) * PREFILL_PER_TOKEN_MS
        duration = DECODE_BASE_MS + DECODE_PER_SEQ_MS * batch + prefill
        rep.busy = True
        push(now + duration, "step_end", (rep.url, admitted))

    while events:
        now, _, kind, payload = heapq.heappop(events)
        if kind == "scrape":
            for rep in reps.values():
                states.update_metrics(rep.url, len(rep.waiting), len(rep.running), kv_use(rep))
            if any(e[2] != "scrape" for e in events):
                push(now + SCRAPE_MS, "scrape", None)
        elif kind == "turn":
            cid, turn = payload  # type: ignore[misc]
            req = convs[cid].next_request(turn, now)
            body = {"messages": [{"role": role, "content": " ".join(part)} for role, part in convs[cid].history]}
            url = scheduler.pick(PickRequest("m", prefix_blocks(body)), urls, now=now / 1000)
            states.started(url)
            rep = reps[url]
            rep.waiting.append(req)
            if not rep.busy:
                step(rep, now)
        elif kind == "step_end":
            url, admitted = payload  # type: ignore[misc]
            rep = reps[url]
            finished = []
            for r in rep.running:
                r.left -= 1
                if r.left <= 0:
                    finished.append(r)
            for r in admitted:
                r.first_token = now
                r.left = r.output - 1
                rep.running.append(r)
            for r in finished:
                rep.running.remove(r)
                done.append(r)
                states.finished(url, ok=True, now=now / 1000)
                conv = convs[r.conv]
                conv.answered(r)
                if r.turn + 1 < conv.turns:
                    push(now + rng.expovariate(1 / 3000), "turn", (r.conv, r.turn + 1))
            step(rep, now)
    ttfts = sorted(r.first_token - r.arrival for r in done)
    span_s = (max(r.first_token for r in done) - min(r.arrival for r in done)) / 1000
    return {
        "ttft_p50_ms": ttfts[len(ttfts) // 2],
        "ttft_p99_ms": ttfts[int(len(ttfts) * 0.99)],
        "tokens_per_s": sum(r.output for r in done) / span_s,
        "requests": len(done),
        "prefix_hit_rate": cache_hits / max(1, cache_lookups),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--conversations", type=int, default=800)
    parser.add_argument("--rate", type=float, default=8.0, help="new conversations per second")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    results = {}
    for policy in POLICIES:
        runs = [simulate(policy, args.replicas, args.conversations, seed, args.rate) for seed in range(args.seeds)]
        results[policy] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(
        f"{args.replicas} replicas, {args.conversations} conversations at {args.rate}/s, median of {args.seeds} seeds"
    )
    print(f"{'policy':<20} {'TTFT p50 ms':>12} {'TTFT p99 ms':>12} {'tokens/s':>10} {'prefix hits':>12}")
    for policy, r in results.items():
        print(
            f"{policy:<20} {r['ttft_p50_ms']:>12.0f} {r['ttft_p99_ms']:>12.0f} {r['tokens_per_s']:>10.0f} "
            f"{r['prefix_hit_rate']:>11.0%}"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "picking_simulator.json").write_text(json.dumps({"args": vars(args), "policies": results}, indent=2))


if __name__ == "__main__":
    main()
