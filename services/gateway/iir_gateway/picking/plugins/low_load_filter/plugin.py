"""Filter: endpoints whose load is within `slack` (or `ratio` times) of the least loaded one."""

from __future__ import annotations

from collections.abc import Sequence

from iir_gateway.picking.base import PickRequest
from iir_gateway.picking.state import EndpointState


class LowLoadFilter:
    def __init__(self, slack: float = 8.0, ratio: float = 1.0) -> None:
        self.slack = slack
        self.ratio = ratio

    def filter(self, request: PickRequest, endpoints: Sequence[EndpointState], now: float) -> list[EndpointState]:
        if not endpoints:
            return []
        loads = [e.load for e in endpoints]
        floor = min(loads)
        ceiling = max(floor + self.slack, floor * self.ratio)
        if max(loads) <= ceiling:
            return list(endpoints)
        return [e for e, load in zip(endpoints, loads, strict=True) if load <= ceiling]
