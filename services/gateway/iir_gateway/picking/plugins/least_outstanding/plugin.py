"""Scorer: fewer requests in flight from this gateway is better."""

from __future__ import annotations

from collections.abc import Sequence

from iir_gateway.picking.base import PickRequest
from iir_gateway.picking.state import EndpointState


def normalized_inverse(values: Sequence[float]) -> list[float]:
    """1 for the smallest value, 0 for the largest, linear between; all 1 when they are equal."""
    low, high = min(values), max(values)
    if high == low:
        return [1.0] * len(values)
    return [1.0 - (v - low) / (high - low) for v in values]


class LeastOutstandingScorer:
    def score(self, request: PickRequest, endpoints: Sequence[EndpointState]) -> list[float]:
        return normalized_inverse([e.outstanding for e in endpoints])
