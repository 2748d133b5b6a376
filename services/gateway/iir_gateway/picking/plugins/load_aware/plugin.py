"""Scorer: the replica's own load report (queue and KV cache), merged with what we have in flight."""

from __future__ import annotations

from collections.abc import Sequence

from iir_gateway.picking.base import PickRequest
from iir_gateway.picking.plugins.least_outstanding.plugin import normalized_inverse
from iir_gateway.picking.state import EndpointState


class LoadAwareScorer:
    def __init__(self, queue_weight: float = 0.5) -> None:
        self.queue_weight = queue_weight

    def score(self, request: PickRequest, endpoints: Sequence[EndpointState]) -> list[float]:
        queue = normalized_inverse([e.load for e in endpoints])
        w = self.queue_weight
        return [
            w * q + (1 - w) * (1.0 - min(1.0, max(0.0, e.kv_cache_usage)))
            for q, e in zip(queue, endpoints, strict=True)
        ]
