"""The InferenceModel status, derived from the plan, the Deployment and its pods."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from iir_common.inference_model import InferenceModelView
from iir_common.kube import MODEL_LABEL, endpoint_url
from iir_operator.plan import Plan
from iir_operator.sizing import FORMULA

Obj = dict[str, Any]

# Container states after which a pod will not become ready without a change.
FAILING_REASONS = {
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
}


def pod_ready(pod: Obj) -> bool:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _pod_failure(pod: Obj) -> tuple[str, str] | None:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in FAILING_REASONS:
            return waiting["reason"], waiting.get("message", "")
    return None


def _unschedulable(pod: Obj) -> str | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable":
            return str(c.get("message") or "no node fits the pod")
    return None


def _replica_failure(deployment: Obj | None) -> tuple[str, str] | None:
    """The Deployment's ReplicaFailure condition: its pods cannot be created (an unknown priority class
    or service account, a quota), so none will ever show."""
    for c in ((deployment or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == "ReplicaFailure" and c.get("status") == "True":
            return str(c.get("reason") or "FailedCreate"), str(c.get("message") or "")
    return None


def utc_stamp() -> str:
    """Now, as Kubernetes writes times (RFC 3339, seconds, UTC)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(kind: str, ok: bool, reason: str, message: str, previous: list[Obj]) -> Obj:
    status = "True" if ok else "False"
    before = next((c for c in previous if c.get("type") == kind), None)
    when = (before or {}).get("lastTransitionTime") if before and before.get("status") == status else None
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": when or utc_stamp(),
    }


def same_status(a: Obj, b: Obj) -> bool:
    """Equal but for the conditions' transition times."""

    def strip(s: Obj) -> Obj:
        return {
            **s,
            "conditions": [
                {k: v for k, v in c.items() if k != "lastTransitionTime"} for c in s.get("conditions") or []
            ],
        }

    return strip(a) == strip(b)


def failed_status(im: Obj, reason: str, message: str) -> Obj:
    previous = (im.get("status") or {}).get("conditions") or []
    return {
        "phase": "Failed",
        "servedName": InferenceModelView.of(im).served_name,
        "reason": reason,
        "message": message,
        "replicas": 0,
        "readyReplicas": 0,
        "endpoints": [],
        "observedGeneration": (im.get("metadata") or {}).get("generation", 0),
        "conditions": [condition("Ready", False, reason, message, previous)],
    }


def compute_status(im: Obj, plan: Plan, deployment: Obj | None, pods: list[Obj]) -> Obj:
    spec = im["spec"]
    view = InferenceModelView.of(im)
    desired = int(spec.get("replicas", 1))
    port = int((spec.get("vllm") or {}).get("port", 8000))
    live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    ready = [p for p in live if pod_ready(p)]
    endpoints = [
        {"url": endpoint_url(p["status"]["podIP"], port), "ready": pod_ready(p), "target": p["metadata"]["name"]}
        for p in live
        if (p.get("status") or {}).get("podIP")
    ]
    failures = [(p["metadata"]["name"], f) for p in live if (f := _pod_failure(p))]
    unschedulable = next((m for p in live if (m := _unschedulable(p))), None)
    n = len(ready)
    if failures and n < desired:
        pod, (reason, detail) = failures[0]
        phase, message = "Failed", f"pod {pod}: {reason}{': ' + detail if detail else ''}"
    elif desired == 0:
        phase, reason = "ScaledToZero", "ScaledToZero"
        message = "no replica; the next request starts one" if view.scales_from_zero else "spec.replicas is 0"
    elif n >= desired:
        phase, reason, message = "Ready", "ReplicasReady", f"{n}/{desired} replicas ready"
    elif n > 0:
        phase, reason, message = "Degraded", "ReplicasNotReady", f"{n}/{desired} replicas ready"
    elif plan.fit_problem:
        phase, reason, message = "Pending", "InsufficientGPU", plan.fit_problem
    elif unschedulable:
        phase, reason, message = "Pending", "Unschedulable", unschedulable
    elif not live and (replica_failure := _replica_failure(deployment)):
        reason, detail = replica_failure
        phase, message = "Failed", f"the Deployment cannot create pods: {detail or reason}"
    elif deployment is None:
        phase, reason, message = "Progressing", "Creating", "creating the vLLM Deployment"
    else:
        phase, reason = "Progressing", "LoadingModel"
        message = f"0/{desired} replicas ready (starting, loading weights)"
    previous = (im.get("status") or {}).get("conditions") or []
    status: Obj = {
        "phase": phase,
        "servedName": view.served_name,
        "reason": reason,
        "message": message,
        "replicas": len(live),
        "readyReplicas": n,
        "selector": f"{MODEL_LABEL}={im['metadata']['name']}",
        "gpusPerReplica": plan.gpus,
        "endpoints": endpoints,
        "observedGeneration": (im.get("metadata") or {}).get("generation", 0),
        "conditions": [
            condition("Ready", phase == "Ready", reason, message, previous),
            condition(
                "GPUCapacity",
                plan.fit_problem is None,
                "InsufficientGPU" if plan.fit_problem else "Fits",
                plan.fit_problem or "a GPU node can take a replica",
                previous,
            ),
        ],
    }
    if (im.get("status") or {}).get("autoscaling"):  # the autoscaler's last decision stays
        status["autoscaling"] = im["status"]["autoscaling"]
    if plan.estimate:
        status["sizing"] = {
            "requiredGiB": plan.estimate.required_gib,
            "gpuMemoryGiB": plan.gpu_memory_gib,
            "gpuProduct": plan.product,
            "formula": FORMULA,
        }
    return status
