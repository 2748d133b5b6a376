"""Kubernetes Events about an InferenceModel, through kopf's event queue."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from iir_common.kube import GROUP, KIND, VERSION, ApiException, Kube
from iir_operator.status import utc_stamp

log = logging.getLogger(__name__)


def post_event(im: dict[str, Any], kind: str, reason: str, message: str) -> None:
    """Posts an Event (`kind` Normal or Warning) on `im`; a no-op outside a running operator."""
    try:
        kopf.event(kopf.Body(im), type=kind, reason=reason, message=message)  # type: ignore[arg-type]
    except LookupError:  # outside a running operator (unit use): no event queue
        pass


async def record_event(kube: Kube, im: dict[str, Any], kind: str, reason: str, message: str) -> None:
    """Writes an Event on `im` through the API directly: for work outside kopf's handlers (the autoscaler),
    where kopf's event queue is not there. Best effort: a refused Event is logged, never raised."""
    meta = im.get("metadata") or {}
    stamp = utc_stamp()
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta.get('name', 'model')}.", "namespace": meta.get("namespace")},
        "involvedObject": {
            "apiVersion": im.get("apiVersion", f"{GROUP}/{VERSION}"),
            "kind": im.get("kind", KIND),
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid", ""),
        },
        "type": kind,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": "iir-operator"},
        "reportingComponent": "iir-operator",
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
    try:
        await kube.create("events", meta.get("namespace"), body)
    except ApiException as exc:
        log.warning("cannot post an event", extra={"reason": reason, "status": exc.status})
