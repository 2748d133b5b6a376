"""Kubernetes Events about an InferenceModel, through kopf's event queue."""

from __future__ import annotations

from typing import Any

import kopf


def post_event(im: dict[str, Any], kind: str, reason: str, message: str) -> None:
    """Posts an Event (`kind` Normal or Warning) on `im`; a no-op outside a running operator."""
    try:
        kopf.event(kopf.Body(im), type=kind, reason=reason, message=message)  # type: ignore[arg-type]
    except LookupError:  # outside a running operator (unit use): no event queue
        pass
