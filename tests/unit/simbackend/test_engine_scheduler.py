"""The simulated engine's scheduler against vLLM v1's rules, step by step (no clock): continuous batching
under a token budget and `max_num_seqs`, chunked prefill, prefix-cache hits counted as vLLM counts them,
LRU eviction, recompute preemption, the prefix-cache reset, and the BlockStored events' contents."""

from __future__ import annotations

import dataclasses

from iir_common.kv_blocks import BlockHasher
from iir_common.kv_events.structs import AllBlocksCleared, BlockRemoved, BlockStored
from iir_simbackend.engine.calibration import LLAMA_31_8B_H100
from iir_simbackend.engine.kv_cache import BlockPool
from iir_simbackend.engine.request import EngineRequest, Lora, State
from iir_simbackend.engine.scheduler import Outcome, Scheduler, Step

HASHER = BlockHasher("sha256", "vllm-none-hash", 16)


def scheduler(blocks: int = 200, budget: int = 64, seqs: int = 8, interval: int = 1) -> Scheduler:
    profile = dataclasses.replace(
        LLAMA_31_8B_H100, num_gpu_blocks=blocks, max_num_batched_tokens=budget, max_num_seqs=seqs
    )
    return Scheduler(profile, BlockPool(profile.num_gpu_blocks), interval)


def request(name: str, prompt: list[int], outputs: int, lora: Lora | None = None) -> EngineRequest:
    output = [50_000 + i for i in range(outputs)]
    extra = lora.extra_keys if lora else None
    return EngineRequest(name, prompt, output, HASHER.block_hashes(prompt + output, extra), lora)


def prompt(start: int, length: int) -> list[int]:
    return list(range(start, start + length))


def step(s: Scheduler) -> tuple[Step, Outcome]:
    planned = s.schedule()
    return planned, s.complete(planned)


def run(s: Scheduler, limit: int = 10_000) -> int:
    steps = 0
    while s.has_work and steps < limit:
        step(s)
        steps += 1
    return steps


def test_running_requests_decode_first_then_waiting_ones_are_admitted_in_chunks() -> None:
    s = scheduler(budget=64)
    r1, r2, r3 = request("r1", prompt(0, 40), 3), request("r2", prompt(100, 40), 3), request("r3", prompt(200, 40), 3)
    for r in (r1, r2, r3):
        s.add(r)
    first, out = step(s)
    assert [(r.request_id, n) for r, n, _ in first.prefills] == [("r1", 40), ("r2", 24)]  # r2 chunked
    assert first.tokens == 64 and list(s.waiting) == [r3]
    assert out.first_tokens == [r1] and r1.visible == 1 and r2.visible == 0
    second, out = step(s)
    assert second.num_decoding == 1  # r1, before any prefill
    assert [(r.request_id, n) for r, n, _ in second.prefills] == [("r2", 16), ("r3", 40)]
    assert out.first_tokens == [r2, r3] and out.sampled == 3
    third, out = step(s)
    assert third.tokens == third.num_decoding == 3 and out.finished == [r1]
    run(s)
    assert all(r.state is State.FINISHED and r.visible == 3 for r in (r1, r2, r3))
    assert s.pool.num_free == s.pool.total  # every block back in the pool


def test_max_num_seqs_holds_requests_in_the_waiting_queue() -> None:
    s = scheduler(budget=1000, seqs=2)
    rs = [request(f"r{i}", prompt(i * 100, 20), 2) for i in range(3)]
    for r in rs:
        s.add(r)
    first, _ = step(s)
    assert [r for r, _, _ in first.prefills] == rs[:2] and list(s.waiting) == [rs[2]]
    step(s)  # both finish
    third, _ = step(s)
    assert [r for r, _, _ in third.prefills] == [rs[2]]


def test_a_repeated_prompt_hits_the_prefix_cache_in_whole_blocks() -> None:
    s = scheduler()
    first = request("a", prompt(0, 40), 2)
    s.add(first)
    run(s)
    again = request("b", prompt(0, 40), 2)
    s.add(again)
    planned, _ = step(s)
    assert again.cached_tokens == 32  # two full blocks; the partial third is recomputed
    assert [(r, n) for r, n, _ in planned.prefills] == [(again, 8)]
    assert (s.prefix_queries, s.prefix_hits) == (80, 32)
    run(s)
    exact = request("c", prompt(0, 32), 2)  # all cached, but the last token is recomputed for its logits
    s.add(exact)
    step(s)
    assert exact.cached_tokens == 16


def test_the_least_recently_freed_blocks_are_evicted_first_tail_before_head() -> None:
    s = scheduler(blocks=7)  # 6 usable blocks: two requests of 3 blocks (2 cached, 1 partial) each
    r1, r2, r3 = request("r1", prompt(0, 40), 1), request("r2", prompt(100, 40), 1), request("r3", prompt(200, 40), 1)
    for r in (r1, r2):
        s.add(r)
        run(s)
    s.pool.take_events()
    s.add(r3)
    run(s)
    removed = [e for e in s.pool.take_events() if isinstance(e, BlockRemoved)]
    assert [e.block_hashes for e in removed] == [[BlockHasher.external(r1.block_hashes[1])]]
    assert len(s.pool.lookup(r1.block_hashes[:2])) == 1  # r1's head survived its tail
    assert len(s.pool.lookup(r2.block_hashes[:2])) == 2


def test_a_hit_makes_blocks_recently_used_again() -> None:
    s = scheduler(blocks=7)
    r1, r2 = request("r1", prompt(0, 40), 1), request("r2", prompt(100, 40), 1)
    for r in (r1, r2, request("r1-again", prompt(0, 40), 1)):
        s.add(r)
        run(s)
    s.pool.take_events()
    s.add(request("r3", prompt(200, 40), 1))
    run(s)
    removed = [e.block_hashes for e in s.pool.take_events() if isinstance(e, BlockRemoved)]
    assert removed == [[BlockHasher.external(r2.block_hashes[1])]]


def test_a_request_that_cannot_get_a_block_preempts_the_last_running_one() -> None:
    s = scheduler(blocks=5, budget=256)  # 4 usable blocks
    r1, r2 = request("r1", prompt(0, 16), 40), request("r2", prompt(100, 16), 40)
    s.add(r1)
    s.add(r2)
    preempting: Step | None = None
    while s.preemptions == 0:
        planned, _ = step(s)
        preempting = planned
    assert preempting is not None and not preempting.prefills  # no admission in a step that preempted
    assert (r1.state, r2.state, list(s.waiting)) == (State.RUNNING, State.WAITING, [r2])
    assert r2.num_computed == 0 and r2.blocks == [] and r2.num_preemptions == 1
    assert (s.prefix_queries, s.prefix_hits) == (32, 0)
    run(s)
    assert (r1.state, r2.state, r2.visible) == (State.FINISHED, State.FINISHED, 40)
    assert s.preemptions == 1
    assert s.prefix_queries == 32  # vLLM counts a resumed request's lookup apart


def test_the_prefix_cache_reset_waits_for_held_blocks_unless_running_requests_are_preempted() -> None:
    s = scheduler()
    r1, r2 = request("r1", prompt(0, 40), 50), request("r2", prompt(100, 40), 50)
    s.add(r1)
    s.add(r2)
    step(s)
    s.pool.take_events()
    assert not s.reset_prefix_cache()
    assert s.reset_prefix_cache(reset_running_requests=True)
    assert list(s.waiting) == [r1, r2] and not s.running  # back in their order
    assert s.pool.take_events() == [AllBlocksCleared()]
    assert s.pool.lookup(r1.block_hashes) == []
    run(s)
    assert r1.visible == r2.visible == 50 and s.reset_prefix_cache()


def test_block_stored_events_chain_each_block_to_its_parent_as_vllm_does() -> None:
    s = scheduler()
    adapter = Lora("sql-adapter", 1, "/adapters/sql")
    r = request("r", prompt(0, 40), 20, adapter)
    s.add(r)
    run(s)
    stored = [e for e in s.pool.take_events() if isinstance(e, BlockStored)]
    ext = [BlockHasher.external(h) for h in r.block_hashes]
    # 60 tokens, 59 computed (the last sampled token never is): blocks 0-1 at prefill, 2 while decoding
    assert [e.block_hashes for e in stored] == [ext[:2], ext[2:3]]
    assert [e.parent_block_hash for e in stored] == [None, ext[1]]
    assert stored[0].token_ids == r.all_ids[:32] and stored[1].token_ids == r.all_ids[32:48]
    assert all(e.block_size == 16 and e.medium == "GPU" and e.group_idx == 0 for e in stored)
    assert (stored[0].lora_id, stored[0].lora_name, stored[0].extra_keys) == (1, "sql-adapter", [("sql-adapter",)] * 2)
    # LoRA requests hash with vLLM's extra keys: the same tokens without the adapter are other blocks
    assert HASHER.block_hashes(r.all_ids[:16])[0] != r.block_hashes[0]


def test_a_decoding_request_is_visited_only_when_something_is_due() -> None:
    s = scheduler(interval=8)
    r = request("r", prompt(0, 20), 200)
    s.add(r)
    visits = 0
    steps = 0
    while s.has_work:
        planned, _ = step(s)
        visits += len(planned.due)
        steps += 1
    assert steps == 200  # one prefill step samples the first token, then one token a step
    assert visits < 200 // 16 * 2 + 200 // 8 + 5
