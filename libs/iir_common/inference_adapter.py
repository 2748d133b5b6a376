"""One reading of an InferenceAdapter object (spec and status, as a dict), shared by the operator, which
loads it and writes its status, and the registry, which lists it: its names, where vLLM finds it, and
which pods hold it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

ADAPTERS_DIR = "/adapters"  # where the operator mounts adapters' PersistentVolumeClaims in vLLM pods


@dataclass(frozen=True, slots=True)
class AdapterView:
    namespace: str
    name: str
    served_name: str  # `spec.servedName`, else the object's name: vLLM's `lora_name`
    base_model: str  # the InferenceModel's name
    lora_path: str  # vLLM's `lora_path`: a Hugging Face id or a directory in the vLLM container
    claim: str  # the PersistentVolumeClaim to mount, if the source is one
    phase: str
    loaded_on: tuple[str, ...]  # pods that hold it

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> AdapterView:
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        source = spec.get("source") or {}
        name = str(meta.get("name", ""))
        claim = ""
        if "huggingFace" in source:
            path = str(source["huggingFace"]["id"])
        elif "pvc" in source:
            claim = str(source["pvc"]["claimName"])
            path = f"{ADAPTERS_DIR}/{claim}/{source['pvc'].get('path', '')}".rstrip("/")
        else:
            path = str(source.get("path", ""))
        return cls(
            namespace=str(meta.get("namespace", "")),
            name=name,
            served_name=str(spec.get("servedName") or name),
            base_model=str(spec.get("baseModel", "")),
            lora_path=path,
            claim=claim,
            phase=str(status.get("phase") or "Pending"),
            loaded_on=tuple(str(p) for p in status.get("loadedOn") or []),
        )


def assign_names(
    adapters: Iterable[Mapping[str, Any]], models: Iterable[str]
) -> tuple[list[tuple[Mapping[str, Any], AdapterView]], dict[str, str]]:
    """Which of a model's adapters may be served under their names, the same rule for the operator (what
    it loads) and the registry (what it lists): oldest first, and none under a name that is taken, by a
    model (`models`: every model's served name, its base model's among them) or by an older adapter.
    Returns the adapters kept, with their views, and why each other one is refused, by object name."""
    ordered = sorted(
        adapters, key=lambda a: ((a.get("metadata") or {}).get("creationTimestamp", ""), AdapterView.of(a).name)
    )
    taken = set(models)
    owners: dict[str, str] = {}  # served name → the adapter that has it
    kept, refused = [], {}
    for adapter in ordered:
        view = AdapterView.of(adapter)
        if view.served_name in taken:
            refused[view.name] = f"the served name {view.served_name!r} is taken: it is a model's"
        elif view.served_name in owners:
            refused[view.name] = (
                f"the served name {view.served_name!r} is taken by the adapter {owners[view.served_name]}"
            )
        else:
            owners[view.served_name] = view.name
            kept.append((adapter, view))
    return kept, refused
