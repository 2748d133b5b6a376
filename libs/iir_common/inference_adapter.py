"""One reading of an InferenceAdapter object (spec and status, as a dict), shared by the operator, which
loads it and writes its status, and the registry, which lists it: its names, where vLLM finds it, and
which pods hold it."""

from __future__ import annotations

from collections.abc import Mapping
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
