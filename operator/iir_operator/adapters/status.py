"""An InferenceAdapter's status, from where the last run could load it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from iir_common.inference_adapter import AdapterView
from iir_operator.status import condition

Obj = dict[str, Any]


@dataclass
class Placement:
    """Where one adapter is, after a run."""

    loaded_on: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)  # pod → why it could not be loaded there


def adapter_status(adapter: Obj, base: str, ready: int, placement: Placement, refused: str | None) -> Obj:
    """`ready`: the base model's ready replicas; `refused`: why the adapter is not served at all, if it
    is not (then `placement` says nothing)."""
    view = AdapterView.of(adapter)
    loaded = [] if refused else sorted(placement.loaded_on)
    if refused:
        phase, reason, message = "Failed", "NotServable", refused
    elif ready == 0:
        phase, reason, message = "Pending", "BaseNotReady", f"the base model {base} has no ready replica"
    elif len(loaded) == ready:
        phase, reason, message = "Ready", "Loaded", f"loaded on {len(loaded)}/{ready} ready replicas of {base}"
    elif placement.failures and not loaded:
        pod, why = sorted(placement.failures.items())[0]
        phase, reason, message = "Failed", "LoadFailed", f"cannot load it on {pod}: {why}"
    else:
        phase, reason, message = "Loading", "Loading", f"loaded on {len(loaded)}/{ready} ready replicas of {base}"
    previous = (adapter.get("status") or {}).get("conditions") or []
    return {
        "phase": phase,
        "servedName": view.served_name,
        "reason": reason,
        "message": message,
        "readyReplicas": len(loaded),
        "loadedOn": loaded,
        "observedGeneration": (adapter.get("metadata") or {}).get("generation", 0),
        "conditions": [condition("Ready", phase == "Ready", reason, message, previous)],
    }
