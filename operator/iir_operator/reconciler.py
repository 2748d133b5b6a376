"""Brings the cluster to what an InferenceModel asks for, and its status to what the cluster shows.

Every trigger (the model changed, its Deployment, Service or pods changed, the periodic resync) runs the
same idempotent `reconcile`: plan, apply what differs, recompute status. One lock per model keeps
concurrent triggers from racing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from iir_common.gpus import gpu_nodes
from iir_common.kube import MODEL_LABEL, PLURAL, ApiException, Kube
from iir_operator.manifests import build_deployment, build_service
from iir_operator.plan import plan_model
from iir_operator.settings import OperatorSettings
from iir_operator.sizing import SpecError
from iir_operator.status import compute_status, failed_status

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


def _same_status(a: Obj, b: Obj) -> bool:
    def strip(s: Obj) -> Obj:
        return {
            **s,
            "conditions": [
                {k: v for k, v in c.items() if k != "lastTransitionTime"} for c in s.get("conditions") or []
            ],
        }

    return strip(a) == strip(b)


def _event(im: Obj, phase: str, reason: str, message: str) -> None:
    try:
        kopf.event(im, type="Warning" if phase in _WARNING_PHASES else "Normal", reason=reason, message=message)
    except LookupError:  # outside a running operator (unit use): no event queue
        pass


class Reconciler:
    def __init__(self, kube: Kube, settings: OperatorSettings) -> None:
        self.kube = kube
        self.settings = settings
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def reconcile_named(self, namespace: str, name: str) -> None:
        im = await self.kube.get(PLURAL, namespace, name)
        if im is not None and not im["metadata"].get("deletionTimestamp"):
            await self.reconcile(im)

    async def reconcile_waiting(self) -> None:
        """Reconciles every model that is not Ready (after a change of GPU capacity)."""
        models, _ = await self.kube.list(PLURAL, self.settings.operator_namespace or None)
        for im in models:
            if (im.get("status") or {}).get("phase") != "Ready" and not im["metadata"].get("deletionTimestamp"):
                await self.reconcile(im)

    async def reconcile(self, im: Obj) -> None:
        key = (im["metadata"]["namespace"], im["metadata"]["name"])
        async with self._locks.setdefault(key, asyncio.Lock()):
            await self._reconcile(im)

    async def _reconcile(self, im: Obj) -> None:
        ns = im["metadata"]["namespace"]
        nodes, _ = await self.kube.list("nodes")
        try:
            plan = plan_model(im["spec"], gpu_nodes(nodes), self.settings.default_gpu_memory_gib)
        except SpecError as exc:
            log.warning("invalid InferenceModel spec", extra={"model": key_of(im), "error": str(exc)})
            await self._write_status(im, failed_status(im, "InvalidSpec", str(exc)))
            return
        deployment = await self._apply(im, "deployments", build_deployment(im, plan))
        await self._apply(im, "services", build_service(im, plan))
        pods, _ = await self.kube.list("pods", ns)
        mine = [p for p in pods if (p["metadata"].get("labels") or {}).get(MODEL_LABEL) == im["metadata"]["name"]]
        await self._write_status(im, compute_status(im, plan, deployment, mine))

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
        if existing is not None and is_subset(
            {"metadata": {"labels": meta["labels"]}, "spec": desired["spec"]}, existing
        ):
            return existing
        log.info("repairing drift", extra={"kind": kind, "object": meta["name"], "model": key_of(im)})
        patched = await self.kube.merge_patch(
            plural,
            meta["namespace"],
            meta["name"],
            {
                "metadata": {"labels": meta["labels"], "ownerReferences": meta["ownerReferences"]},
                "spec": desired["spec"],
            },
        )
        _event(im, "Progressing", f"{kind}Updated", f"brought {kind} {meta['name']} back to the spec")
        return patched

    async def _write_status(self, im: Obj, status: Obj) -> None:
        current = im.get("status") or {}
        if _same_status(current, status):
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


def key_of(im: Obj) -> str:
    return f"{im['metadata']['namespace']}/{im['metadata']['name']}"
