"""Filter: endpoints not ejected for failures."""

from __future__ import annotations

from collections.abc import Sequence

from iir_gateway.picking.base import PickRequest
from iir_gateway.picking.state import EndpointState


class HealthyFilter:
    def filter(self, request: PickRequest, endpoints: Sequence[EndpointState], now: float) -> list[EndpointState]:
        return [e for e in endpoints if e.healthy(now)]
