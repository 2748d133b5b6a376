"""Plugin type name → factory. A factory takes the plugin context and the plugin's parameters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from iir_gateway.picking.base import PluginContext
from iir_gateway.picking.plugins.healthy_filter.plugin import HealthyFilter
from iir_gateway.picking.plugins.least_outstanding.plugin import LeastOutstandingScorer
from iir_gateway.picking.plugins.load_aware.plugin import LoadAwareScorer
from iir_gateway.picking.plugins.lora_affinity.plugin import LoraAffinityScorer
from iir_gateway.picking.plugins.low_load_filter.plugin import LowLoadFilter
from iir_gateway.picking.plugins.max_score.plugin import MaxScorePicker
from iir_gateway.picking.plugins.predicted_ttft.plugin import PredictedTtftScorer
from iir_gateway.picking.plugins.prefix_affinity.plugin import PrefixAffinityScorer
from iir_gateway.picking.plugins.round_robin.plugin import RoundRobinPicker

Factory = Callable[[PluginContext, dict[str, Any]], Any]

PLUGINS: dict[str, Factory] = {
    "healthy_filter": lambda ctx, p: HealthyFilter(),
    "low_load_filter": lambda ctx, p: LowLoadFilter(**p),
    "least_outstanding": lambda ctx, p: LeastOutstandingScorer(),
    "load_aware": lambda ctx, p: LoadAwareScorer(**p),
    "lora_affinity": lambda ctx, p: LoraAffinityScorer(**p),
    "prefix_affinity": lambda ctx, p: PrefixAffinityScorer(ctx),
    "predicted_ttft": lambda ctx, p: PredictedTtftScorer(
        ctx, **{"prefill_tokens_per_s": ctx.prefill_tokens_per_s, **p}
    ),
    "round_robin": lambda ctx, p: RoundRobinPicker(),
    "max_score": lambda ctx, p: MaxScorePicker(),
}


def register(name: str, factory: Factory) -> None:
    """Adds a plugin type (for extensions and tests)."""
    PLUGINS[name] = factory


def build(name: str, context: PluginContext, params: dict[str, Any] | None = None) -> Any:
    try:
        return PLUGINS[name](context, params or {})
    except KeyError:
        raise ValueError(f"unknown picking plugin {name!r}; known: {', '.join(sorted(PLUGINS))}") from None
