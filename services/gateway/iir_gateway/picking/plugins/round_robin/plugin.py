"""Picker: each eligible endpoint in turn, per model; scores are ignored."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from iir_gateway.picking.base import PickRequest
from iir_gateway.picking.state import EndpointState


class RoundRobinPicker:
    def __init__(self) -> None:
        self._counters: dict[str, itertools.count[int]] = {}

    def pick(self, request: PickRequest, endpoints: Sequence[EndpointState], scores: Sequence[float]) -> EndpointState:
        counter = self._counters.setdefault(request.model, itertools.count())
        return endpoints[next(counter) % len(endpoints)]
