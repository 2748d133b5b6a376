"""Scorer: the replica with the shortest predicted time to first token, counting the prefill its KV cache saves."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from iir_gateway.picking.base import PickRequest, PluginContext
from iir_gateway.picking.state import EndpointState

_MAX_SESSIONS = 100_000


class PredictedTtftScorer:
    def __init__(
        self,
        context: PluginContext,
        prefill_tokens_per_s: float | None = None,
        decode_weight: float = 16.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.states = context.states
        self.index = context.kv_index
        self.rate = prefill_tokens_per_s or context.prefill_tokens_per_s
        self.decode_weight = decode_weight
        self.clock = clock
        self.mean_uncached = 0.0
        self.sessions: OrderedDict[str, tuple[str, int]] = OrderedDict()
        # Each candidate's uncached prompt tokens in the last score() (picked() reads the chosen one's).
        self._uncached: dict[str, float] = {}

    def _cached(self, request: PickRequest, endpoints: Sequence[EndpointState]) -> list[float]:
        tokens = float(request.prompt_tokens)
        urls = [e.url for e in endpoints]
        index = self.index
        precise = [index is not None and bool(request.kv_blocks) and index.publishing(u) for u in urls]
        cached = [0.0] * len(endpoints)
        if any(precise):
            assert index is not None
            for i, matched in enumerate(index.match_lengths(request.kv_blocks, urls)):
                if precise[i]:
                    cached[i] = min(tokens, float(matched * request.block_size))
        blocks = request.prefix_blocks
        sticky = self.sessions.get(request.session) if request.session else None
        for i, e in enumerate(endpoints):
            if precise[i]:
                continue
            if blocks:
                matched = 0
                for block in blocks:
                    if block not in e.prefixes:
                        break
                    matched += 1
                cached[i] = tokens * matched / len(blocks)
            if sticky is not None and sticky[0] == e.url:
                cached[i] = max(cached[i], min(tokens, float(sticky[1])))
        return cached

    def score(self, request: PickRequest, endpoints: Sequence[EndpointState]) -> list[float]:
        now = self.clock()
        tokens = float(request.prompt_tokens)
        known = bool(request.kv_blocks or request.prefix_blocks or request.session)
        cached = self._cached(request, endpoints) if known else None
        rate, weight, mean = self.rate, self.decode_weight, self.mean_uncached
        costs = []
        uncached_by_url = self._uncached = {}
        for i, e in enumerate(endpoints):
            uncached = tokens if cached is None else max(0.0, tokens - cached[i])
            uncached_by_url[e.url] = uncached
            sent = e.backlog_tokens - (now - e.backlog_at) * rate
            queued = e.waiting * mean
            busy = e.running if e.running > e.outstanding else e.outstanding
            costs.append((sent if sent > queued else queued if queued > 0 else 0.0) + uncached + weight * busy)
        low = min(costs) + 1.0
        return [low / (c + 1.0) for c in costs]

    def picked(self, request: PickRequest, endpoint: EndpointState) -> None:
        """The chosen replica now has this request's prefill queued (and this prompt's prefix, this session)."""
        uncached = self._uncached.get(endpoint.url, float(request.prompt_tokens))
        now = self.clock()
        sent = endpoint.backlog_tokens - (now - endpoint.backlog_at) * self.rate
        endpoint.backlog_tokens = (sent if sent > 0 else 0.0) + uncached
        endpoint.backlog_at = now
        self.mean_uncached += 0.05 * (uncached - self.mean_uncached)
        endpoint.prompt_tokens += request.prompt_tokens
        endpoint.predicted_cached_tokens += round(request.prompt_tokens - uncached)
        if request.prefix_blocks:
            self.states.remember_prefixes(endpoint.url, request.prefix_blocks)
        if request.session:
            self.sessions[request.session] = (endpoint.url, request.prompt_tokens)
            self.sessions.move_to_end(request.session)
            if len(self.sessions) > _MAX_SESSIONS:
                self.sessions.popitem(last=False)
