"""One simulated engine core: an asyncio task that runs scheduler steps back to back, each lasting the
time the calibrated GPU would take (times `time_scale`), then applies what the step produced, updates
vLLM's metrics and publishes the step's KV events. Requests are added, aborted and the prefix cache reset
between steps, as vLLM's engine core handles its input queue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from iir_common.kv_blocks import BlockHasher
from iir_simbackend.engine.calibration import Profile, step_seconds
from iir_simbackend.engine.kv_cache import BlockPool
from iir_simbackend.engine.kv_events import ZmqEventPublisher
from iir_simbackend.engine.request import EngineRequest, Lora, State
from iir_simbackend.engine.scheduler import Outcome, Scheduler, Step
from iir_simbackend.vllm_metrics import VllmMetrics

log = logging.getLogger("iir_simbackend.engine")

# When the event loop falls behind (CPU starved), the engine catches up by running at most this far
# behind its own clock; beyond it, the lost time is dropped (the simulated GPU slows down instead).
_MAX_LAG_S = 0.05


@dataclass(frozen=True)
class KvEventsConfig:
    endpoint: str
    replay_endpoint: str | None = None
    topic: str = ""


class Engine:
    def __init__(
        self,
        profile: Profile,
        metrics: VllmMetrics,
        hasher: BlockHasher,
        time_scale: float = 1.0,
        stream_interval: int = 1,
        kv_events: KvEventsConfig | None = None,
    ) -> None:
        if hasher.block_size != profile.block_size:
            raise ValueError("the hasher's block size must be the profile's")
        self.profile = profile
        self.metrics = metrics
        self.hasher = hasher
        self.time_scale = time_scale
        self.pool = BlockPool(profile.num_gpu_blocks, events=kv_events is not None)
        self.scheduler = Scheduler(profile, self.pool, stream_interval)
        self.kv_events = kv_events
        self.publisher: ZmqEventPublisher | None = None
        self._pending: list[Callable[[], None]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lora_ids: dict[str, int] = {}
        self._counted = (0, 0, 0)  # prefix queries, hits, preemptions already in the metrics
        self.steps = 0
        metrics.waiting.set_function(lambda: len(self.scheduler.waiting))
        metrics.running.set_function(lambda: len(self.scheduler.running))
        metrics.kv_cache_usage.set_function(lambda: self.pool.usage)

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        if self.kv_events is not None and self.publisher is None:
            cfg = self.kv_events
            self.publisher = ZmqEventPublisher(cfg.endpoint, cfg.replay_endpoint, cfg.topic)
            self.publisher.start()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="sim-engine")
            self._task.add_done_callback(self._stopped)

    @staticmethod
    def _stopped(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("the engine loop died", exc_info=task.exception())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.publisher is not None:
            await self.publisher.close()
            self.publisher = None

    # -- requests ---------------------------------------------------------------------------------

    def lora(self, name: str, path: str) -> Lora:
        """The adapter as vLLM names it: its integer id is given when first used (vLLM gives it on load)."""
        int_id = self._lora_ids.setdefault(name, len(self._lora_ids) + 1)
        return Lora(name, int_id, path)

    def submit(
        self,
        request_id: str,
        prompt_ids: list[int],
        output_ids: list[int],
        lora: Lora | None = None,
        session_id: str | None = None,
    ) -> EngineRequest:
        """A request for `output_ids` after `prompt_ids`, queued at the next step boundary."""
        output_ids = output_ids or [0]  # vLLM samples at least one token
        hashes = self.hasher.block_hashes(prompt_ids + output_ids, lora.extra_keys if lora else None)
        request = EngineRequest(request_id, prompt_ids, output_ids, hashes, lora, session_id)
        self._between_steps(lambda: self.scheduler.add(request))
        return request

    def abort(self, request: EngineRequest) -> None:
        if not request.done:
            self._between_steps(lambda: self.scheduler.abort(request))

    async def reset_prefix_cache(self, reset_running_requests: bool = False) -> bool:
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._between_steps(lambda: done.set_result(self.scheduler.reset_prefix_cache(reset_running_requests)))
        return await done

    def _between_steps(self, op: Callable[[], None]) -> None:
        self._pending.append(op)
        self._wake.set()

    # -- the step loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        clock = loop.time()
        idle = True
        while True:
            self._apply_pending()
            step = self.scheduler.schedule() if self.scheduler.has_work else None
            if step is None or step.empty:
                self._account(Outcome())
                self._wake.clear()
                await self._wake.wait()
                idle = True
                continue
            now = loop.time()
            if idle:
                clock, idle = now, False
            clock = max(clock, now - _MAX_LAG_S) + self._seconds(step)
            await asyncio.sleep(max(0.0, clock - now))
            self.steps += 1
            self._account(self.scheduler.complete(step))

    def _seconds(self, step: Step) -> float:
        gpu = step_seconds(self.profile, step.tokens, step.attention_pairs, step.decode_context)
        return gpu * self.time_scale

    def _apply_pending(self) -> None:
        pending, self._pending = self._pending, []
        for op in pending:
            op()

    def _account(self, outcome: Outcome) -> None:
        m = self.metrics
        now = time.monotonic()
        for request in outcome.first_tokens:
            request.first_token_at = now
            m.ttft.observe(now - request.arrival)
            m.prompt_tokens.inc(request.num_prompt)
        for request in outcome.finished:
            m.e2e.observe(now - request.arrival)
            if request.state is State.FINISHED:
                m.success.inc()
        if outcome.sampled:
            m.generation_tokens.inc(outcome.sampled)
        s = self.scheduler
        queries, hits, preemptions = self._counted
        if s.prefix_queries != queries:
            m.prefix_cache_queries.inc(s.prefix_queries - queries)
            m.prefix_cache_hits.inc(s.prefix_hits - hits)
        if s.preemptions != preemptions:
            m.preemptions.inc(s.preemptions - preemptions)
        self._counted = (s.prefix_queries, s.prefix_hits, s.preemptions)
        events = self.pool.take_events()
        if events and self.publisher is not None:
            self.publisher.publish(time.time(), events)
