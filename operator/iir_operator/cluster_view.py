"""What the reconciler reads of the cluster besides the model itself: GPU nodes, the model's pods and
its LoRA adapters, from kopf's in-memory indexes (kept current by their watches), so a reconcile lists nothing."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from iir_common.gpus import GpuNode, gpu_nodes
from iir_common.inference_model import InferenceModelView

Obj = dict[str, Any]


class ClusterView(Protocol):
    def gpu_nodes(self) -> list[GpuNode]: ...

    def pods_of(self, namespace: str, model: str) -> list[Obj]: ...

    def adapters_of(self, namespace: str, model: str) -> list[Obj]: ...

    def model_names(self) -> set[str]:
        """The served names of every InferenceModel (an adapter may take none of them)."""
        ...


class IndexedCluster:
    """A `ClusterView` over the operator's indexes: GPU nodes by name, pods and adapters by (namespace,
    model)."""

    def __init__(
        self,
        nodes: Mapping[Any, Iterable[Obj]],
        pods: Mapping[Any, Iterable[Obj]],
        adapters: Mapping[Any, Iterable[Obj]] | None = None,
        models: Mapping[Any, Iterable[Obj]] | None = None,
    ) -> None:
        self._nodes = nodes
        self._pods = pods
        self._adapters = adapters or {}
        self._models = models or {}

    def gpu_nodes(self) -> list[GpuNode]:
        return gpu_nodes(node for store in self._nodes.values() for node in store)

    def pods_of(self, namespace: str, model: str) -> list[Obj]:
        return list(self._pods.get((namespace, model), ()))

    def adapters_of(self, namespace: str, model: str) -> list[Obj]:
        return list(self._adapters.get((namespace, model), ()))

    def model_names(self) -> set[str]:
        return {InferenceModelView.of(m).served_name for store in self._models.values() for m in store}
