"""Brings the cluster to what an InferenceModel asks for, and its status to what the cluster shows.

Every trigger (the model changed, its Deployment, Service, pods or LoRA adapters changed, a GPU node
changed) runs the same idempotent `reconcile`: plan, apply what differs, recompute status, and bring
its ready replicas to hold its adapters. One lock per model keeps
concurrent triggers from racing. Nodes and pods are read from a `ClusterView` (kopf's indexes), not
listed; the last plan of each model is kept, so a node change re-runs only the waiting models whose
fit it changes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from iir_common.inference_adapter import AdapterView
from iir_common.inference_model import InferenceModelView
from iir_common.kube import PLURAL, ApiException, Kube
from iir_operator.adapters.sync import AdapterSync
from iir_operator.cluster_view import ClusterView
from iir_operator.events import post_event
from iir_operator.manifests import build_deployment, build_service, stale_patch
from iir_operator.plan import Plan, plan_model
from iir_operator.settings import OperatorSettings
from iir_operator.sizing import SpecError
from iir_operator.status import compute_status, failed_status, same_status

log = logging.getLogger(__name__)
Obj = dict[str, Any]
_WARNING_PHASES = {"Failed", "Degraded", "Pending"}


def is_subset(want: Any, have: Any) -> bool:
    """True when every field of `want` is in `have` with the same value (lists element by element)."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(is_subset(v, have.get(k)) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(have, list) and len(want) == len(have) and all(map(is_subset, want, have))
    return bool(want == have or (want is not None and have is not None and str(want) == str(have)))


def merged(base: Obj, extra: Obj) -> Obj:
    """`base` with `extra` merged in, dicts key by key (`extra` wins elsewhere); neither is changed."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _event(im: Obj, phase: str, reason: str, message: str) -> None:
    post_event(im, "Warning" if phase in _WARNING_PHASES else "Normal", reason, message)


class Reconciler:
    def __init__(self, kube: Kube, settings: OperatorSettings) -> None:
        self.kube = kube
        self.settings = settings
        self.adapters = AdapterSync(kube)
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.plans: dict[tuple[str, str], Plan] = {}  # the last plan of each model

    async def reconcile_named(self, namespace: str, name: str, cluster: ClusterView) -> None:
        im = await self.kube.get(PLURAL, namespace, name)
        if im is not None and not im["metadata"].get("deletionTimestamp"):
            await self.reconcile(im, cluster)

    async def reconcile_waiting(self, models: list[Obj], cluster: ClusterView) -> int:
        """After a change of GPU capacity: reconciles the models that are not Ready and whose fit the
        change alters (they fit now, or their size changed); returns how many."""
        nodes = cluster.gpu_nodes()
        changed = 0
        for im in models:
            if InferenceModelView.of(im).ready or im["metadata"].get("deletionTimestamp"):
                continue
            try:
                plan = plan_model(im["spec"], nodes, self.settings.default_gpu_memory_gib)
            except SpecError:
                continue  # its status says so already; nodes cannot fix a spec
            if _fit(self.plans.get(_key(im))) != _fit(plan):
                changed += 1
                await self.reconcile(im, cluster)
        return changed

    async def reconcile(self, im: Obj, cluster: ClusterView) -> None:
        async with self._locks.setdefault(_key(im), asyncio.Lock()):
            await self._reconcile(im, cluster)

    async def _reconcile(self, im: Obj, cluster: ClusterView) -> None:
        ns, name = _key(im)
        try:
            plan = plan_model(im["spec"], cluster.gpu_nodes(), self.settings.default_gpu_memory_gib)
        except SpecError as exc:
            log.warning("invalid InferenceModel spec", extra={"model": key_of(im), "error": str(exc)})
            await self._write_status(im, failed_status(im, "InvalidSpec", str(exc)))
            return
        self.plans[(ns, name)] = plan
        adapters = cluster.adapters_of(ns, name)
        claims = sorted({c for a in adapters if (c := AdapterView.of(a).claim)})
        try:
            deployment = await self._apply(im, "deployments", build_deployment(im, plan, claims))
            await self._apply(im, "services", build_service(im, plan))
        except ApiException as exc:
            if exc.status not in (400, 422):
                raise
            # A spec the schema lets through but the API server refuses in the Deployment (its pod fields
            # pass through): retrying cannot help, a change of spec can.
            log.warning("object refused", extra={"model": key_of(im), "error": str(exc.reason)})
            await self._write_status(im, failed_status(im, "InvalidSpec", f"the API server refused: {exc.reason}"))
            return
        pods = cluster.pods_of(ns, name)
        await self._write_status(im, compute_status(im, plan, deployment, pods))
        if adapters or im["spec"].get("lora"):
            await self.adapters.sync(im, adapters, pods, cluster.model_names())

    async def _apply(self, im: Obj, plural: str, desired: Obj) -> Obj:
        meta = desired["metadata"]
        kind = desired["kind"]
        existing = await self.kube.get(plural, meta["namespace"], meta["name"])
        if existing is None:
            try:
                created = await self.kube.create(plural, meta["namespace"], desired)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                existing = await self.kube.get(plural, meta["namespace"], meta["name"])
            else:
                log.info("created", extra={"kind": kind, "object": meta["name"], "model": key_of(im)})
                _event(im, "Progressing", f"{kind}Created", f"created {kind} {meta['name']}")
                return created
        owned_meta = {
            "labels": meta["labels"],
            **({"annotations": meta["annotations"]} if "annotations" in meta else {}),
        }
        # What an earlier spec put in the pod template and this one dropped (a merge patch only adds).
        stale = stale_patch(desired, existing) if existing is not None and plural == "deployments" else {}
        if (
            existing is not None
            and not stale
            and is_subset({"metadata": owned_meta, "spec": desired["spec"]}, existing)
        ):
            return existing
        log.info("repairing drift", extra={"kind": kind, "object": meta["name"], "model": key_of(im)})
        patched = await self.kube.merge_patch(
            plural,
            meta["namespace"],
            meta["name"],
            merged(
                {"metadata": {**owned_meta, "ownerReferences": meta["ownerReferences"]}, "spec": desired["spec"]},
                stale,
            ),
        )
        _event(im, "Progressing", f"{kind}Updated", f"brought {kind} {meta['name']} back to the spec")
        return patched

    async def _write_status(self, im: Obj, status: Obj) -> None:
        current = im.get("status") or {}
        if same_status(current, status):
            return
        ns, name = im["metadata"]["namespace"], im["metadata"]["name"]
        await self.kube.merge_patch(PLURAL, ns, name, {"status": status}, subresource="status")
        im["status"] = status
        if current.get("phase") != status["phase"] or current.get("reason") != status["reason"]:
            log.info(
                "phase changed",
                extra={
                    "model": key_of(im),
                    "phase": status["phase"],
                    "reason": status["reason"],
                    "detail": status["message"],
                },
            )
            _event(im, status["phase"], status["reason"], f"{status['phase']}: {status['message']}")


def _fit(plan: Plan | None) -> tuple[int, int, bool] | None:
    """What a node change can change that matters: the GPUs per replica and whether a node takes one
    (not the wording of why none does)."""
    return None if plan is None else (plan.gpus, plan.tensor_parallel, plan.fit_problem is None)


def _key(im: Obj) -> tuple[str, str]:
    return im["metadata"]["namespace"], im["metadata"]["name"]


def key_of(im: Obj) -> str:
    return f"{im['metadata']['namespace']}/{im['metadata']['name']}"
