"""The autoscaling loop: for every InferenceModel with `spec.autoscaling`, the rule's recommendation,
stabilised, written to `spec.replicas` (what the scale subresource and an HPA write too). Every change
is a Kubernetes Event and `status.autoscaling` with the figures behind it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from iir_common.kube import PLURAL, ApiException, Kube
from iir_operator.autoscaling.rule import AutoscalingSpec, recommend
from iir_operator.autoscaling.signals import RegistrySignals
from iir_operator.autoscaling.stabilizer import Stabilizer
from iir_operator.events import record_event
from iir_operator.status import utc_stamp

log = logging.getLogger(__name__)
Obj = dict[str, Any]
_FRESH_WRITE_S = 10.0  # how long our own write outranks a model body that does not show it yet


class Autoscaler:
    def __init__(
        self,
        kube: Kube,
        signals: RegistrySignals,
        models: Callable[[], Iterable[Obj]],
        interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.signals = signals
        self.models = models
        self.interval_s = interval_s
        self.clock = clock
        self.stabilizer = Stabilizer()
        self._active_at: dict[tuple[str, str], float] = {}  # last time the model had load (or was first seen)
        self._written: dict[tuple[str, str], tuple[int, float]] = {}
        self._wake = asyncio.Event()
        signals.on_demand = self._wake.set

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()
            if not self.signals.connected:
                continue  # no figures is not "no load": scale nothing
            for im in list(self.models()):
                try:
                    await self.evaluate(im)
                except ApiException as exc:
                    log.warning("cannot scale", extra={"model": _name(im), "status": exc.status})

    async def evaluate(self, im: Obj) -> int | None:
        """Decides one model; returns the replicas written, or None when nothing changed."""
        meta = im.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        spec = AutoscalingSpec.of(im.get("spec") or {})
        if spec is None or meta.get("deletionTimestamp"):
            self.stabilizer.forget(key)
            self._active_at.pop(key, None)
            return None
        figures = self.signals.figures(*key)
        if figures is None:
            return None
        now = self.clock()
        current = int((im.get("spec") or {}).get("replicas", 1))
        written = self._written.get(key)
        if written and written[0] != current and now - written[1] < _FRESH_WRITE_S:
            current = written[0]
        if figures.load > 0 or key not in self._active_at:
            self._active_at[key] = now
        recommended, why = recommend(spec, figures, now - self._active_at[key])
        desired = self.stabilizer.apply(key, recommended, current, now, spec.up_window_s, spec.down_window_s)
        if current == 0 and figures.held > 0:
            desired = max(recommended, 1)  # a cold start waits for no window
        if desired == current:
            return None
        message = f"{current} → {desired} replicas: {why} ({figures.describe()})"
        ns, name = key
        await self.kube.merge_patch(PLURAL, ns, name, {"spec": {"replicas": desired}})
        self._written[key] = (desired, now)
        stamp = utc_stamp()
        status = {"autoscaling": {"desiredReplicas": desired, "lastScaleTime": stamp, "message": message}}
        await self.kube.merge_patch(PLURAL, ns, name, {"status": status}, subresource="status")
        reason = (
            "ScaledToZero"
            if desired == 0
            else "ScaledFromZero"
            if current == 0
            else "ScaledUp"
            if desired > current
            else "ScaledDown"
        )
        log.info("autoscaled", extra={"model": f"{ns}/{name}", "from": current, "to": desired, "detail": message})
        await record_event(self.kube, im, "Normal", reason, message)
        return desired


def _name(im: Obj) -> str:
    meta = im.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"
