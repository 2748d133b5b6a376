"""Picker: the highest total score; ties go round robin so equal replicas share the load."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from iir_gateway.picking.base import PickRequest
from iir_gateway.picking.state import EndpointState


class MaxScorePicker:
    def __init__(self) -> None:
        self._tie_breaker = itertools.count()

    def pick(self, request: PickRequest, endpoints: Sequence[EndpointState], scores: Sequence[float]) -> EndpointState:
        best = max(scores)
        top = [e for e, s in zip(endpoints, scores, strict=True) if s >= best - 1e-9]
        return top[next(self._tie_breaker) % len(top)]
