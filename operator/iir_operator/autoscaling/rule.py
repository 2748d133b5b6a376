"""The scaling rule: from a model's figures to the replicas it should have.

    load         = running + waiting + held            (over the ready replicas; held: by gateways)
    by_requests  = ceil(load / targetRequestsPerReplica)
    by_kv_cache  = ceil(ready × mean KV-cache use / targetKVCacheUsage)        (when that target is set)
    desired      = clamp(max(by_requests, by_kv_cache), minReplicas, maxReplicas)

With minReplicas 0 the model keeps one replica until it has had no load for scaleToZeroAfterSeconds,
then goes to 0; any held request brings it back to at least one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AutoscalingSpec:
    min_replicas: int
    max_replicas: int
    target_requests: float
    target_kv: float | None
    up_window_s: float
    down_window_s: float
    zero_after_s: float

    @classmethod
    def of(cls, spec: dict[str, Any]) -> AutoscalingSpec | None:
        a = spec.get("autoscaling")
        if not isinstance(a, dict) or not a.get("maxReplicas"):
            return None
        return cls(
            min_replicas=int(a.get("minReplicas", 1)),
            max_replicas=int(a["maxReplicas"]),
            target_requests=float(a.get("targetRequestsPerReplica") or 16),
            target_kv=float(a["targetKVCacheUsage"]) if a.get("targetKVCacheUsage") else None,
            up_window_s=float(a.get("scaleUpWindowSeconds", 0)),
            down_window_s=float(a.get("scaleDownWindowSeconds", 300)),
            zero_after_s=float(a.get("scaleToZeroAfterSeconds", 300)),
        )


@dataclass(frozen=True)
class Figures:
    """One model's load now: summed over its ready replicas, plus what gateways hold for it."""

    ready: int = 0
    running: float = 0.0
    waiting: float = 0.0
    held: int = 0
    kv_cache_usage: float = 0.0  # mean over the ready replicas, 0..1

    @property
    def load(self) -> float:
        return self.running + self.waiting + self.held

    def describe(self) -> str:
        return (
            f"running {self.running:g}, waiting {self.waiting:g}, held {self.held} on {self.ready} ready "
            f"replica(s), KV cache {self.kv_cache_usage:.0%}"
        )


def recommend(spec: AutoscalingSpec, figures: Figures, idle_s: float) -> tuple[int, str]:
    """The replicas the figures call for now (before stabilisation), and why."""
    by_requests = math.ceil(figures.load / spec.target_requests)
    why = f"load {figures.load:g} / {spec.target_requests:g} per replica = {by_requests}"
    wanted = by_requests
    if spec.target_kv and figures.ready:
        by_kv = math.ceil(figures.ready * figures.kv_cache_usage / spec.target_kv - 1e-9)
        why += f"; KV cache {figures.kv_cache_usage:.0%} / {spec.target_kv:.0%} on {figures.ready} = {by_kv}"
        wanted = max(wanted, by_kv)
    if spec.min_replicas == 0:
        if figures.load == 0 and idle_s >= spec.zero_after_s:
            return 0, f"no request for {idle_s:.0f}s (scale to zero after {spec.zero_after_s:.0f}s)"
        wanted = max(wanted, 1)
    clamped = min(max(wanted, spec.min_replicas), spec.max_replicas)
    if clamped != wanted:
        why += f"; within [{spec.min_replicas}, {spec.max_replicas}] = {clamped}"
    return clamped, why
