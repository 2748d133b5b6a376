"""One reading of an InferenceModel object (spec and status, as a dict), shared by the operator, which
writes its status, and the registry, which serves it: the name vLLM serves, the phase, the endpoints."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class StatusEndpoint:
    url: str
    ready: bool
    target: str


@dataclass(frozen=True, slots=True)
class InferenceModelView:
    namespace: str
    name: str
    served_name: str  # `spec.servedName`, else the object's name: what vLLM is told to serve
    phase: str
    endpoints: tuple[StatusEndpoint, ...]
    # spec.autoscaling.minReplicas is 0: at no replica, requests wait for one to start.
    scales_from_zero: bool = False

    @property
    def ready(self) -> bool:
        return self.phase == "Ready"

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> InferenceModelView:
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        endpoints = tuple(
            StatusEndpoint(str(e["url"]), bool(e.get("ready", True)), str(e.get("target", "")))
            for e in status.get("endpoints") or []
            if isinstance(e, Mapping) and e.get("url")
        )
        name = str(meta.get("name", ""))
        autoscaling = spec.get("autoscaling")
        return cls(
            namespace=str(meta.get("namespace", "")),
            name=name,
            served_name=str(spec.get("servedName") or name),
            phase=str(status.get("phase") or "Pending"),
            endpoints=endpoints,
            scales_from_zero=isinstance(autoscaling, Mapping) and autoscaling.get("minReplicas", 1) == 0,
        )
