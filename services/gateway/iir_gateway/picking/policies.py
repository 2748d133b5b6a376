"""Named endpoint-picking policies, and the scheduler that runs one: filters, weighted scorers, a picker."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from iir_gateway.picking.base import PickRequest, PluginContext
from iir_gateway.picking.registry import build
from iir_gateway.picking.state import EndpointStates


@dataclass(frozen=True)
class Policy:
    filters: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    scorers: list[tuple[str, float, dict[str, Any]]] = field(default_factory=list)
    picker: tuple[str, dict[str, Any]] = ("max_score", {})
    # Whether requests need prefix facts (token counts, block hashes): only the prefix scorers read them.
    uses_prefixes: bool = False


HEALTHY: tuple[str, dict[str, Any]] = ("healthy_filter", {})
POLICIES: dict[str, Policy] = {
    "round_robin": Policy([HEALTHY], [], ("round_robin", {})),
    "least_outstanding": Policy([HEALTHY], [("least_outstanding", 1.0, {})]),
    "load_aware": Policy([HEALTHY], [("load_aware", 1.0, {}), ("lora_affinity", 1.0, {})]),
    "precise_prefix": Policy(
        [HEALTHY, ("low_load_filter", {"slack": 16, "ratio": 1.5})],
        [("predicted_ttft", 1.0, {}), ("lora_affinity", 0.1, {})],
        uses_prefixes=True,
    ),
    "load_aware_prefix": Policy(
        [HEALTHY, ("low_load_filter", {"slack": 8})],
        [("prefix_affinity", 2.0, {}), ("load_aware", 1.0, {}), ("lora_affinity", 1.0, {})],
        uses_prefixes=True,
    ),
}


class Scheduler:
    """Picks one endpoint URL for a request with the plugins of a policy."""

    def __init__(self, policy: str | Policy, states: EndpointStates, context: PluginContext | None = None) -> None:
        if isinstance(policy, str):
            if policy not in POLICIES:
                raise ValueError(f"unknown endpoint picking policy {policy!r}; known: {', '.join(sorted(POLICIES))}")
            policy = POLICIES[policy]
        context = context or PluginContext(states)
        self.states = states
        self.policy = policy
        self.filters = [build(name, context, params) for name, params in policy.filters]
        self.scorers = [(build(name, context, params), weight) for name, weight, params in policy.scorers]
        self.picker = build(policy.picker[0], context, policy.picker[1])
        self._after_pick = [s for s, _ in self.scorers if hasattr(s, "picked")]

    def pick(self, request: PickRequest, urls: Sequence[str], now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        candidates = [self.states.get(u) for u in urls]
        for f in self.filters:
            kept = f.filter(request, candidates, now)
            if kept:  # a filter that would leave nothing is skipped, not fatal
                candidates = kept
        totals = [0.0] * len(candidates)
        for scorer, weight in self.scorers:
            for i, value in enumerate(scorer.score(request, candidates)):
                totals[i] += weight * value
        chosen = self.picker.pick(request, candidates, totals)
        for scorer in self._after_pick:
            scorer.picked(request, chosen)
        return str(chosen.url)
