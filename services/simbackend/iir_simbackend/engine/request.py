"""One engine request (one output of an HTTP request): its tokens, its block hashes, where the scheduler
has it, and the future a streaming handler awaits for its next tokens."""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass
from typing import Any

from iir_simbackend.engine.kv_cache import Block


class State(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"
    ABORTED = "aborted"


@dataclass(frozen=True)
class Lora:
    """The adapter a request runs with, as vLLM's LoRARequest names it."""

    name: str
    int_id: int
    path: str

    @property
    def extra_keys(self) -> tuple[Any, ...]:
        """vLLM 0.32's block-hash extra keys for a LoRA request (`_gen_lora_extra_hash_keys`)."""
        return (("lora", self.name, self.path),)


class EngineRequest:
    """Token counts follow vLLM's Request: `num_tokens` is prompt plus outputs so far, `num_computed`
    the tokens whose KV exists. A decoding request advances one token a step; the scheduler keeps that
    implicitly (`base_step`, `base_computed`) so a step costs O(requests with something due)."""

    def __init__(
        self,
        request_id: str,
        prompt_ids: list[int],
        output_ids: list[int],
        block_hashes: list[bytes],
        lora: Lora | None = None,
        session_id: str | None = None,
    ) -> None:
        self.request_id = request_id
        self.all_ids = prompt_ids + output_ids
        self.num_prompt = len(prompt_ids)
        self.max_output = len(output_ids)
        self.block_hashes = block_hashes  # of every full block of `all_ids`
        self.lora = lora
        self.session_id = session_id
        self.arrival = time.monotonic()
        self.state = State.WAITING
        self.num_computed = 0
        self.num_output = 0
        self.num_preemptions = 0
        self.cached_tokens = 0  # prefix-cache hit at first admission
        self.first_token_at: float | None = None
        self.blocks: list[Block] = []
        self.num_cached_blocks = 0  # of `blocks`, those this request has hashed into the cache
        self.seq = 0  # position in the running order
        self.epoch = 0  # bumped when the request leaves the decoding set, invalidating its scheduled events
        self.decoding = False
        self.base_step = 0
        self.base_computed = 0
        self.base_output = 0
        self.visible = 0  # outputs the streaming handler may send
        self._waiter: asyncio.Future[None] | None = None

    @property
    def num_tokens(self) -> int:
        return self.num_prompt + self.num_output

    @property
    def done(self) -> bool:
        return self.state in (State.FINISHED, State.ABORTED)

    def computed_at(self, step: int) -> int:
        """A decoding request's computed tokens when step `step` is scheduled."""
        return self.base_computed + step - self.base_step

    def publish(self, visible: int) -> None:
        """Lets the handler send up to `visible` outputs, waking it."""
        self.visible = visible
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        self._waiter = None

    async def wait_for(self, outputs: int) -> None:
        """Returns once `outputs` outputs may be sent, or the request is over."""
        while self.visible < outputs and not self.done:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
