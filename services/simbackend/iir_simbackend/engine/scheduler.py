"""vLLM v1's scheduler step (vllm/v1/core/sched/scheduler.py, FCFS, chunked prefill always on, no
speculative decoding), without the model: which requests run in a step, with how many tokens, what KV
blocks that takes, and what the step produced.

A step first gives each running request its tokens in running order (one for a decoding request, the
rest of its prompt, up to the budget, for one still prefilling); a request that cannot get a block
preempts the last running request (recompute: its blocks freed, back to the front of the waiting
queue) until it fits or is itself preempted. Then, if nothing was preempted, waiting requests are
admitted first come first served while the token budget and `max_num_seqs` allow: the longest cached
prefix of their block hashes is reused (at most `num_tokens - 1` tokens, whole blocks), the rest is
prefilled in chunks. A block is hashed into the prefix cache when the step that fills it is scheduled.

Decoding requests are not visited every step: each is filed under the next step at which something
happens to it (it needs a block, fills one, finishes, or has tokens to stream), so a step costs
O(requests with something due) plus the prefilling ones."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from itertools import count

from iir_common.kv_blocks import BlockHasher
from iir_common.kv_events.structs import MEDIUM_GPU, BlockStored
from iir_simbackend.engine.calibration import Profile, prefill_pairs
from iir_simbackend.engine.kv_cache import BlockPool
from iir_simbackend.engine.request import EngineRequest, State


@dataclass
class Step:
    """What one scheduled step runs, and (after `Scheduler.complete`) what it produced."""

    number: int
    prefills: list[tuple[EngineRequest, int, int]] = field(default_factory=list)  # (request, tokens, epoch)
    due: list[tuple[EngineRequest, int]] = field(default_factory=list)  # decoding requests with events
    num_decoding: int = 0
    decode_context: int = 0  # KV tokens the decoding requests read
    prefill_tokens: int = 0
    attention_pairs: float = 0.0
    preempted: int = 0

    @property
    def tokens(self) -> int:
        return self.prefill_tokens + self.num_decoding

    @property
    def empty(self) -> bool:
        return self.tokens == 0


@dataclass
class Outcome:
    """Requests whose first token came, requests that finished, and how many tokens the step sampled."""

    first_tokens: list[EngineRequest] = field(default_factory=list)
    finished: list[EngineRequest] = field(default_factory=list)
    sampled: int = 0


class Scheduler:
    def __init__(self, profile: Profile, pool: BlockPool, stream_interval: int = 1) -> None:
        self.profile = profile
        self.block_size = profile.block_size
        self.pool = pool
        self.stream_interval = max(1, stream_interval)
        self.waiting: deque[EngineRequest] = deque()
        self.running: dict[EngineRequest, None] = {}  # in running order
        self._prefilling: dict[EngineRequest, None] = {}  # running, not (yet) decoding
        self._due: dict[int, list[tuple[EngineRequest, int]]] = {}  # step -> decoding requests
        self._num_decoding = 0
        self._context_base = 0  # sum over decoding requests of base_computed - base_step
        self._step = 0
        self._seq = count()
        # vLLM's prefix-cache counters (tokens), and preemptions
        self.prefix_queries = 0
        self.prefix_hits = 0
        self.preemptions = 0

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, request: EngineRequest) -> None:
        self.waiting.append(request)

    # -- scheduling -------------------------------------------------------------------------------

    def schedule(self) -> Step:
        self._step += 1
        step = Step(self._step)
        budget = self.profile.max_num_batched_tokens - self._num_decoding
        for request, epoch in sorted(self._due.pop(step.number, ()), key=lambda d: d[0].seq):
            if request.epoch != epoch or request.state is not State.RUNNING:
                continue  # preempted or finished since it was filed
            computed = request.computed_at(step.number)
            if computed % self.block_size == 0:
                budget += self._make_room(request, 1, step)
                if request.state is not State.RUNNING:
                    continue
            self._cache_blocks(request, computed + 1)
            step.due.append((request, epoch))
        for request in list(self._prefilling):
            if request.state is not State.RUNNING or budget <= 0:
                continue
            tokens = min(request.num_tokens - request.num_computed, budget)
            budget += self._make_room(request, tokens, step)
            if request.state is not State.RUNNING:
                break
            self._schedule_prefill(request, tokens, step)
            budget -= tokens
        if not step.preempted:
            self._admit(budget, step)
        step.num_decoding = self._num_decoding
        step.decode_context = self._context_base + self._num_decoding * step.number
        step.attention_pairs += step.decode_context + self._num_decoding
        return step

    def _make_room(self, request: EngineRequest, tokens: int, step: Step) -> int:
        """Allocates the blocks `tokens` more tokens need, preempting the last running requests until
        they fit; returns the token budget the preempted decoding requests gave back."""
        computed = request.computed_at(step.number) if request.decoding else request.num_computed
        need = -(-(computed + tokens) // self.block_size) - len(request.blocks)
        returned = 0
        while need > self.pool.num_free:
            victim = next(reversed(self.running))
            returned += 1 if victim.decoding else 0
            self.preempt(victim, step.number)
            step.preempted += 1
            if victim is request:
                return returned
        if need > 0:
            request.blocks.extend(self.pool.allocate(need))
        return returned

    def _schedule_prefill(self, request: EngineRequest, tokens: int, step: Step) -> None:
        step.prefills.append((request, tokens, request.epoch))
        step.prefill_tokens += tokens
        step.attention_pairs += prefill_pairs(request.num_computed, tokens)
        request.num_computed += tokens
        self._cache_blocks(request, request.num_computed)

    def _admit(self, budget: int, step: Step) -> None:
        bs = self.block_size
        while budget > 0 and self.waiting and len(self.running) < self.profile.max_num_seqs:
            request = self.waiting[0]
            num_tokens = request.num_tokens
            hit = self.pool.lookup(request.block_hashes[: (num_tokens - 1) // bs])
            hit_tokens = len(hit) * bs
            tokens = min(num_tokens - hit_tokens, budget)
            fresh = -(-(hit_tokens + tokens) // bs) - len(hit)
            if fresh + sum(1 for b in hit if b.ref == 0) > self.pool.num_free:  # free hit blocks count too
                break
            self.waiting.popleft()
            self.pool.touch(hit)
            request.blocks = hit + self.pool.allocate(fresh)
            request.num_cached_blocks = len(hit)
            request.num_computed = hit_tokens
            if request.num_preemptions == 0:  # vLLM counts a resumed request's lookup apart
                self.prefix_queries += num_tokens
                self.prefix_hits += hit_tokens
                request.cached_tokens = hit_tokens
            request.state = State.RUNNING
            request.seq = next(self._seq)
            self.running[request] = None
            self._prefilling[request] = None
            self._schedule_prefill(request, tokens, step)
            budget -= tokens

    def _cache_blocks(self, request: EngineRequest, tokens: int) -> None:
        """Hashes the request's blocks that its first `tokens` tokens fill into the prefix cache
        (BlockStored)."""
        bs = self.block_size
        full = tokens // bs
        first = request.num_cached_blocks
        if full <= first:
            return
        hashes = request.block_hashes
        for i in range(first, full):
            self.pool.insert(request.blocks[i], hashes[i])
        request.num_cached_blocks = full
        if not self.pool.records_events:
            return
        lora = request.lora
        self.pool.events.append(
            BlockStored(
                block_hashes=[BlockHasher.external(h) for h in hashes[first:full]],
                parent_block_hash=BlockHasher.external(hashes[first - 1]) if first else None,
                token_ids=request.all_ids[first * bs : full * bs],
                block_size=bs,
                lora_id=lora.int_id if lora else None,
                medium=MEDIUM_GPU,
                lora_name=lora.name if lora else None,
                extra_keys=[(lora.name,)] * (full - first) if lora else None,
                group_idx=0,
                session_id=request.session_id,
            )
        )

    # -- after the step ---------------------------------------------------------------------------

    def complete(self, step: Step) -> Outcome:
        """Applies what the step computed: a token sampled for every request that reached the end of its
        tokens; requests that produced their last token finish and free their blocks."""
        out = Outcome(sampled=step.num_decoding)
        n = step.number
        interval = self.stream_interval
        for request, epoch in step.due:
            if request.epoch != epoch or request.state is not State.RUNNING:
                continue
            outputs = request.base_output + n - request.base_step + 1
            if outputs >= request.max_output:
                request.num_output = outputs
                request.num_computed = request.computed_at(n) + 1
                self._stop_decoding(request)
                self._finish(request, out)
                continue
            if (outputs - 1) % interval == 0:
                request.publish(outputs)
            self._file(request, n + 1)
        for request, _, epoch in step.prefills:
            if request.epoch != epoch or request.state is not State.RUNNING:
                continue
            if request.num_computed < request.num_tokens:
                continue  # more prompt to prefill
            out.sampled += 1
            request.num_output += 1
            if request.first_token_at is None:
                out.first_tokens.append(request)
            del self._prefilling[request]
            if request.num_output >= request.max_output:
                self._finish(request, out)
                continue
            request.publish(request.num_output)
            self._start_decoding(request, n + 1)
        return out

    def _start_decoding(self, request: EngineRequest, first_step: int) -> None:
        request.decoding = True
        request.base_step = first_step
        request.base_computed = request.num_computed
        request.base_output = request.num_output
        self._num_decoding += 1
        self._context_base += request.base_computed - first_step
        self._file(request, first_step)

    def _stop_decoding(self, request: EngineRequest) -> None:
        request.decoding = False
        request.epoch += 1
        self._num_decoding -= 1
        self._context_base -= request.base_computed - request.base_step

    def _file(self, request: EngineRequest, step: int) -> None:
        """Files a decoding request under the next step, from `step`, at which something is due."""
        bs = self.block_size
        computed = request.computed_at(step)
        outputs_before = request.base_output + step - request.base_step
        wait = min(
            (-computed) % bs,  # needs a new block
            (bs - 1 - computed) % bs,  # fills a block
            request.max_output - 1 - outputs_before,  # samples its last token
            (-outputs_before) % self.stream_interval,  # has tokens to stream
        )
        self._due.setdefault(step + wait, []).append((request, request.epoch))

    def _finish(self, request: EngineRequest, out: Outcome) -> None:
        request.state = State.FINISHED
        self._release(request)
        out.finished.append(request)
        request.publish(request.max_output)

    def _release(self, request: EngineRequest) -> None:
        del self.running[request]
        self._prefilling.pop(request, None)
        self.pool.free(reversed(request.blocks))
        request.blocks = []
        request.num_cached_blocks = 0

    def preempt(self, request: EngineRequest, step: int) -> None:
        """Recompute preemption: blocks freed, the request back at the front of the waiting queue."""
        if request.decoding:
            request.num_output = request.base_output + step - request.base_step
            self._stop_decoding(request)
        request.epoch += 1
        self._release(request)
        request.state = State.WAITING
        request.num_computed = 0
        request.num_preemptions += 1
        self.preemptions += 1
        self.waiting.appendleft(request)

    def abort(self, request: EngineRequest) -> None:
        """Drops a request the client left (between steps)."""
        if request.state is State.WAITING:
            self.waiting.remove(request)
        elif request.state is State.RUNNING:
            if request.decoding:
                self._stop_decoding(request)
            request.epoch += 1
            self._release(request)
        else:
            return
        request.state = State.ABORTED
        request.publish(request.visible)

    def reset_prefix_cache(self, reset_running_requests: bool = False) -> bool:
        """vLLM's reset: optionally preempts every running request (last first, so they resume in
        order), then clears the cache if no block is held."""
        if reset_running_requests:
            while self.running:
                self.preempt(next(reversed(self.running)), self._step + 1)
        return self.pool.reset()
