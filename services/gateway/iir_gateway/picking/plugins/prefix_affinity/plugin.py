"""Scorer: the replica that most likely holds this prompt's prefix (or this session) in its KV cache."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from iir_gateway.picking.base import PickRequest, PluginContext
from iir_gateway.picking.state import EndpointState

_MAX_SESSIONS = 100_000


class PrefixAffinityScorer:
    def __init__(self, context: PluginContext) -> None:
        self.states = context.states
        self.sessions: OrderedDict[str, str] = OrderedDict()

    def score(self, request: PickRequest, endpoints: Sequence[EndpointState]) -> list[float]:
        scores = []
        sticky = self.sessions.get(request.session) if request.session else None
        blocks = request.prefix_blocks
        for e in endpoints:
            if sticky is not None and e.url == sticky:
                scores.append(1.0)
                continue
            scores.append(e.prefix_match(blocks) / len(blocks) if blocks else 0.0)
        return scores

    def picked(self, request: PickRequest, endpoint: EndpointState) -> None:
        """The chosen replica now holds this prompt's prefix (and this session)."""
        self.states.remember_prefixes(endpoint.url, request.prefix_blocks)
        if request.session:
            self.sessions[request.session] = endpoint.url
            self.sessions.move_to_end(request.session)
            if len(self.sessions) > _MAX_SESSIONS:
                self.sessions.popitem(last=False)
