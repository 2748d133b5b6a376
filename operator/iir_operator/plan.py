"""What to run for an InferenceModel: GPUs per replica, tensor parallelism, and whether any node fits it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from iir_common.gpus import GpuNode, memory_for
from iir_operator.sizing import Estimate, SpecError, estimate


@dataclass(frozen=True)
class Plan:
    gpus: int
    tensor_parallel: int
    product: str
    gpu_memory_gib: float
    estimate: Estimate | None
    # Why no node can take a replica now (reason InsufficientGPU), or None.
    fit_problem: str | None


def _gpu_memory(product: str, candidates: Sequence[GpuNode], default: float) -> float:
    for node in candidates:
        if node.memory_gib:
            return node.memory_gib
    return memory_for(product, default)


def plan_model(spec: dict[str, Any], nodes: Sequence[GpuNode], default_gpu_memory_gib: float) -> Plan:
    """Resolves GPUs per replica (given or estimated) and checks the nodes; SpecError when it cannot."""
    product = str((spec.get("gpu") or {}).get("product") or "")
    candidates = [n for n in nodes if not product or n.product == product]
    memory = _gpu_memory(product, candidates, default_gpu_memory_gib)
    est = None
    if spec.get("gpusPerReplica"):
        gpus = int(spec["gpusPerReplica"])
    else:
        est = estimate(spec, memory)
        gpus = est.gpus
    tp = int(spec.get("tensorParallelSize") or gpus)
    if tp > gpus:
        raise SpecError(f"spec.tensorParallelSize ({tp}) exceeds the {gpus} GPU(s) per replica")
    problem = None
    if int(spec.get("replicas", 1)) > 0 and not any(n.allocatable >= gpus for n in candidates):
        need = f"needs {gpus}× {product or 'GPU'} per replica"
        if est:
            need += f" (about {est.required_gib:.0f} GiB, {est.usable_gib_per_gpu:.0f} GiB usable per GPU)"
        if nodes:
            big = max(nodes, key=lambda n: (n.allocatable, n.memory_gib))
            problem = (
                f"{need}; the largest GPU node, {big.name}, offers {big.allocatable}× "
                f"{big.product or 'GPU'} ({big.memory_gib:.0f} GiB each)"
            )
        else:
            problem = f"{need}; no node offers nvidia.com/gpu"
    return Plan(gpus, tp, product, memory, est, problem)
