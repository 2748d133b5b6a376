"""Scorer: the replica with the shortest predicted time to first token, counting the prefill its KV cache saves."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from iir_gateway.picking.base import PickRequest, PluginContext
from iir_gateway.picking.state import EndpointState

_MAX_SESSIONS = 100_000
_MAX_PENDING = 200_000  # blocks per endpoint


class PredictedTtftScorer:
    def __init__(
        self,
        context: PluginContext,
        prefill_tokens_per_s: float | None = None,
        decode_weight: float | None = None,
        pending_s: float = 30.0,
        arrivals_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.states = context.states
        self.index = context.kv_index
        self.rate = prefill_tokens_per_s or context.prefill_tokens_per_s
        self.decode_weight = 16.0 if decode_weight is None else decode_weight
        self.pending_s = pending_s
        self.arrivals_s = arrivals_s
        self.clock = clock
        # Blocks sent to a replica that its events do not show yet (being computed, or the events on their
        # way): URL → block hash → until when it counts as held.
        self.pending: dict[str, OrderedDict[int, float]] = {}
        self._matched: dict[str, int] = {}
        self.mean_uncached = 0.0
        self.sessions: OrderedDict[str, tuple[str, int]] = OrderedDict()
        # Each candidate's uncached prompt tokens in the last score() (picked() reads the chosen one's).
        self._uncached: dict[str, float] = {}

    def _cached(self, request: PickRequest, endpoints: Sequence[EndpointState], now: float) -> list[float]:
        tokens = float(request.prompt_tokens)
        urls = [e.url for e in endpoints]
        index = self.index
        blocks = request.kv_blocks
        precise = [index is not None and bool(blocks) and index.publishing(u) for u in urls]
        cached = [0.0] * len(endpoints)
        self._matched = {}
        if any(precise):
            assert index is not None
            n = len(blocks)
            for i, matched in enumerate(index.match_lengths(blocks, urls)):
                if not precise[i]:
                    continue
                pending = self.pending.get(urls[i])
                if pending:
                    while matched < n and pending.get(blocks[matched], 0.0) > now:
                        matched += 1
                self._matched[urls[i]] = matched
                cached[i] = min(tokens, float(matched * request.block_size))
        approximate = request.prefix_blocks
        sticky = self.sessions.get(request.session) if request.session else None
        for i, e in enumerate(endpoints):
            if precise[i]:
                continue
            if approximate:
                cached[i] = tokens * e.prefix_match(approximate) / len(approximate)
            if sticky is not None and sticky[0] == e.url:
                cached[i] = max(cached[i], min(tokens, float(sticky[1])))
        return cached

    def score(self, request: PickRequest, endpoints: Sequence[EndpointState]) -> list[float]:
        now = self.clock()
        tokens = float(request.prompt_tokens)
        known = bool(request.kv_blocks or request.prefix_blocks or request.session)
        cached = self._cached(request, endpoints, now) if known else None
        rate, weight, mean, tau = self.rate, self.decode_weight, self.mean_uncached, self.arrivals_s
        costs = []
        uncached_by_url = self._uncached = {}
        for i, e in enumerate(endpoints):
            uncached = tokens if cached is None else max(0.0, tokens - cached[i])
            uncached_by_url[e.url] = uncached
            sent = e.backlog_tokens - (now - e.backlog_at) * rate
            queued = e.waiting * mean
            busy = e.running if e.running > e.outstanding else e.outstanding
            # The requests that will come to e while this prefill runs wait for it, half of it on average.
            arrivals = e.arrivals * math.exp((e.arrivals_at - now) / tau) / tau if e.arrivals else 0.0
            delays = arrivals * uncached * uncached / (2.0 * rate)
            costs.append((sent if sent > queued else queued if queued > 0 else 0.0) + uncached + weight * busy + delays)
        low = min(costs) + 1.0
        return [low / (c + 1.0) for c in costs]

    def picked(self, request: PickRequest, endpoint: EndpointState) -> None:
        """The chosen replica now has this request's prefill queued (and this prompt's prefix, this session)."""
        uncached = self._uncached.get(endpoint.url, float(request.prompt_tokens))
        now = self.clock()
        sent = endpoint.backlog_tokens - (now - endpoint.backlog_at) * self.rate
        endpoint.backlog_tokens = (sent if sent > 0 else 0.0) + uncached
        endpoint.backlog_at = now
        endpoint.arrivals = endpoint.arrivals * math.exp((endpoint.arrivals_at - now) / self.arrivals_s) + 1.0
        endpoint.arrivals_at = now
        matched = self._matched.get(endpoint.url)
        if matched is not None and matched < len(request.kv_blocks):
            pending = self.pending.setdefault(endpoint.url, OrderedDict())
            until = now + self.pending_s
            for block in request.kv_blocks[matched:]:
                pending[block] = until
                pending.move_to_end(block)
            while len(pending) > _MAX_PENDING:
                pending.popitem(last=False)
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
