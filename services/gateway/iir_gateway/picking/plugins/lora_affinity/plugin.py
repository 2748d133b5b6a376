"""Scorer: for a LoRA adapter, the replicas already running it first, then those with a free LoRA slot."""

from __future__ import annotations

from collections.abc import Sequence

from iir_gateway.picking.base import PickRequest
from iir_gateway.picking.state import EndpointState


class LoraAffinityScorer:
    def __init__(self, free_slot: float = 0.5) -> None:
        self.free_slot = free_slot

    def score(self, request: PickRequest, endpoints: Sequence[EndpointState]) -> list[float]:
        if not request.adapter:
            return [0.0] * len(endpoints)  # a base model's request: no opinion
        out = []
        for e in endpoints:
            active = e.running_adapters | e.waiting_adapters
            if request.adapter in active:
                out.append(1.0)
            elif e.max_loras and len(active) < e.max_loras:
                out.append(self.free_slot)
            else:
                out.append(0.0)
        return out
