"""`local/<name>`: models served by vLLM pods, found through the registry's catalogue.

A replica is chosen by the configured picking policy among the ready ones (a draining replica gets
nothing new); while every ready replica is saturated the request waits in a bounded queue, highest key
priority first; a model scaled to zero holds the request until its first replica is ready.
"""

from __future__ import annotations

import asyncio
from typing import Any

from iir.v1 import registry_pb2
from iir_gateway.accounting.prices import FREE, Price
from iir_gateway.errors import APIError
from iir_gateway.picking.base import PickRequest
from iir_gateway.picking.policies import Scheduler
from iir_gateway.picking.prompt_blocks import PromptBlocks
from iir_gateway.picking.queue import PriorityGate, Saturated
from iir_gateway.picking.state import EndpointStates
from iir_gateway.providers.base import RouteRequest
from iir_gateway.providers.local.catalogue import ModelCatalogue
from iir_gateway.providers.local.cold_start import ColdStarts
from iir_gateway.upstream.target import Upstream


def model_not_found(model: str) -> APIError:
    return APIError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
        param="model",
    )


class LocalProvider:
    name = "local"

    def __init__(
        self,
        catalogue: ModelCatalogue,
        scheduler: Scheduler,
        states: EndpointStates,
        gate: PriorityGate,
        max_outstanding: int = 256,
        max_waiting: float = 128,
        retries: int = 2,
        cold_starts: ColdStarts | None = None,
        prompt_blocks: PromptBlocks | None = None,
    ) -> None:
        self.catalogue = catalogue
        self.cold_starts = cold_starts or ColdStarts()
        self.scheduler = scheduler
        self.states = states
        catalogue.on_replicas_gone(states.forget)  # a vanished replica's state would be kept for ever
        self.gate = gate
        self.max_outstanding = max_outstanding
        self.max_waiting = max_waiting
        self.retries = retries
        self.prompt_blocks = prompt_blocks or PromptBlocks("/nonexistent")

    def _entry(self, full: str) -> registry_pb2.Model:
        entry = self.catalogue.get(full)
        if entry is None:
            if not self.catalogue.synced.is_set():
                raise APIError(
                    503, "The model registry is unavailable; try again shortly.", code="registry_unavailable"
                )
            raise model_not_found(full)
        return entry

    def _startable(self, full: str) -> bool:
        """Whether a held request stops waiting: a replica is ready, or the model went or stopped
        scaling from zero (what `_ready` then says applies)."""
        entry = self.catalogue.get(full)
        return entry is None or not entry.scale_from_zero or any(e.ready for e in entry.endpoints)

    def _ready(self, full: str) -> tuple[registry_pb2.Model, list[registry_pb2.Endpoint]]:
        entry = self._entry(full)
        ready = [e for e in entry.endpoints if e.ready]
        if not ready:
            raise APIError(
                503,
                f"The model `{full}` has no ready replica (phase {entry.phase or 'unknown'}"
                f"{': ' + entry.message if entry.message else ''}).",
                code="model_not_ready",
            )
        return entry, ready

    def _room(self, endpoints: list[registry_pb2.Endpoint]) -> list[registry_pb2.Endpoint]:
        """The endpoints not saturated: fewer than `max_outstanding` in flight from here and `max_waiting` queued."""
        room = []
        for e in endpoints:
            state = self.states.get(e.url)
            if state.outstanding < self.max_outstanding and state.waiting < self.max_waiting:
                room.append(e)
        return room

    async def resolve(self, model: str, request: RouteRequest) -> Upstream:
        full = f"{self.name}/{model}"
        if self._entry(full).scale_from_zero:
            await self.cold_starts.hold(full, lambda: self._startable(full))
        entry, ready = self._ready(full)
        room = self._room(ready)
        deadline = None
        while not room:
            deadline = deadline or asyncio.get_running_loop().time() + self.gate.timeout_s
            try:
                await self.gate.wait(full, request.priority, deadline)
            except Saturated as exc:
                raise APIError(
                    429,
                    str(exc),
                    code="model_saturated",
                    type="rate_limit_error",
                    headers={"retry-after": str(exc.retry_after_s)},
                ) from None
            entry, ready = self._ready(full)
            room = self._room(ready)
        if len(room) == 1:
            url = room[0].url
        else:
            adapter = entry.served_name if entry.base_model else ""
            pick = PickRequest(full, session=request.session, adapter=adapter)
            if self.scheduler.policy.uses_prefixes:
                facts = self.prompt_blocks.facts(entry, request.body, adapter)
                pick = PickRequest(
                    full,
                    facts.approximate_blocks,
                    request.session,
                    adapter,
                    facts.tokens,
                    facts.kv_blocks,
                    facts.block_size,
                )
            url = self.scheduler.pick(pick, [e.url for e in room])
        self.states.started(url)
        target = next((e.target for e in room if e.url == url), "") or url
        return Upstream(
            base_url=url.rstrip("/") + "/v1",
            model=entry.served_name,
            target=target,
            endpoint=url,
            public_model=full,
            metric_model=full,
            retries=self.retries,
        )

    def fallbacks(self, model: str) -> tuple[str, ...]:
        entry = self.catalogue.get(f"{self.name}/{model}")
        return tuple(entry.fallbacks) if entry is not None else ()

    def release(self, upstream: Upstream, ok: bool | None) -> None:
        if upstream.endpoint in self.catalogue.replicas:  # not one that left while the request ran
            self.states.finished(upstream.endpoint, ok)
        self.gate.wake(upstream.public_model)

    def counter(self, model: str) -> Upstream | None:
        full = f"{self.name}/{model}"
        entry = self.catalogue.get(full)
        ready = [e for e in entry.endpoints if e.ready] if entry is not None else []
        if entry is None or not ready or entry.base_model:  # an adapter: its base model's replica counts
            return None
        url = min(ready, key=lambda e: self.states.get(e.url).outstanding).url
        return Upstream(base_url=url.rstrip("/") + "/v1", model=entry.served_name, endpoint=url, public_model=full)

    def knows(self, model: str) -> bool:
        return self.catalogue.get(f"{self.name}/{model}") is not None

    def price(self, model: str) -> Price:
        entry = self.catalogue.get(f"{self.name}/{model}")
        if entry is None:
            return FREE
        return Price(input=entry.price_input, output=entry.price_output)

    def list_models(self) -> list[dict[str, Any]]:
        return [
            {"id": m.name, "object": "model", "created": m.created, "owned_by": m.owned_by or "iir"}
            for m in self.catalogue.models.values()
            if m.scale_from_zero or any(e.ready for e in m.endpoints)
        ]
