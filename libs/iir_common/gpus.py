"""GPU nodes as IIR sees them: product, memory per GPU, allocatable and free GPUs."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

PRODUCT_LABEL = "nvidia.com/gpu.product"
MEMORY_LABEL = "nvidia.com/gpu.memory"  # MiB per GPU, set by NVIDIA GPU feature discovery

# Memory per GPU (GiB) of common products, by their `nvidia.com/gpu.product` label value.
GPU_MEMORY_GIB: dict[str, float] = {
    "NVIDIA-H200": 141,
    "NVIDIA-H100-80GB-HBM3": 80,
    "NVIDIA-H100-PCIe": 80,
    "NVIDIA-H100-NVL": 94,
    "NVIDIA-A100-SXM4-80GB": 80,
    "NVIDIA-A100-80GB-PCIe": 80,
    "NVIDIA-A100-SXM4-40GB": 40,
    "NVIDIA-A100-PCIE-40GB": 40,
    "NVIDIA-L40S": 48,
    "NVIDIA-L40": 48,
    "NVIDIA-A40": 48,
    "NVIDIA-L4": 24,
    "NVIDIA-A10G": 24,
    "NVIDIA-A10": 24,
    "NVIDIA-GeForce-RTX-4090": 24,
    "Tesla-T4": 16,
    "Tesla-V100-SXM2-16GB": 16,
    "Tesla-V100-SXM2-32GB": 32,
}


def _quantity(value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


@dataclass(frozen=True)
class GpuNode:
    name: str
    product: str
    memory_gib: float
    allocatable: int
    free: int

    @property
    def total_gib(self) -> float:
        return self.memory_gib * self.allocatable


def memory_for(product: str, default: float = 0.0) -> float:
    return GPU_MEMORY_GIB.get(product, default)


def gpus_requested(pod: dict[str, Any], resource: str = "nvidia.com/gpu") -> int:
    containers = (pod.get("spec") or {}).get("containers") or []
    total = 0
    for c in containers:
        res = c.get("resources") or {}
        total += _quantity((res.get("limits") or {}).get(resource) or (res.get("requests") or {}).get(resource) or 0)
    return total


def gpu_nodes(
    nodes: Iterable[dict[str, Any]], pods: Iterable[dict[str, Any]] = (), resource: str = "nvidia.com/gpu"
) -> list[GpuNode]:
    """Nodes with at least one allocatable GPU, with the GPUs that running pods leave free."""
    used: dict[str, int] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        phase = (pod.get("status") or {}).get("phase")
        if node and phase not in ("Succeeded", "Failed"):
            used[node] = used.get(node, 0) + gpus_requested(pod, resource)
    out = []
    for node in nodes:
        meta = node.get("metadata") or {}
        allocatable = _quantity(((node.get("status") or {}).get("allocatable") or {}).get(resource, 0))
        if allocatable <= 0:
            continue
        labels = meta.get("labels") or {}
        product = labels.get(PRODUCT_LABEL, "")
        mib = _quantity(labels.get(MEMORY_LABEL, 0))
        memory = round(mib / 1024, 1) if mib else memory_for(product)
        name = meta.get("name", "")
        out.append(GpuNode(name, product, memory, allocatable, max(0, allocatable - used.get(name, 0))))
    return sorted(out, key=lambda n: (-n.total_gib, n.name))
