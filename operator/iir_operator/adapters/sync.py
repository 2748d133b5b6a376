"""Brings every ready replica of a model to hold exactly its InferenceAdapters, and each adapter's status
to where it is loaded.

Run after each reconcile of the base model (its pods coming and going trigger those) and on each
change of an adapter. What a replica holds is read from the replica itself, so nothing is remembered
between runs: a restarted replica (which forgets runtime loads) is filled again, an adapter deleted
while the operator was away is unloaded at the next run. Adapters given on the command line
(`--lora-modules` in spec.vllm.extraArgs) are the replica's own and left alone.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from iir_common.inference_adapter import AdapterView, assign_names
from iir_common.inference_model import InferenceModelView
from iir_common.kube import ADAPTER_PLURAL, Kube, endpoint_url
from iir_operator.adapters.status import Placement, adapter_status
from iir_operator.adapters.vllm_api import AdapterCallError, VllmAdapters
from iir_operator.status import pod_ready, same_status

log = logging.getLogger(__name__)
Obj = dict[str, Any]


def _static_adapters(im: Obj) -> set[str]:
    args = list(((im.get("spec") or {}).get("vllm") or {}).get("extraArgs") or [])
    names = set()
    for i, arg in enumerate(args):
        if arg == "--lora-modules":
            names |= {a.split("=", 1)[0] for a in args[i + 1 :] if not a.startswith("--")}
    return names


class AdapterSync:
    def __init__(self, kube: Kube, api: VllmAdapters | None = None) -> None:
        self.kube = kube
        self.api = api or VllmAdapters()

    async def sync(
        self, im: Obj, adapters: list[Obj], pods: list[Obj], model_names: set[str] | None = None
    ) -> dict[str, Placement]:
        """Loads and unloads on every ready pod; writes each adapter's status; returns the placements.
        `model_names`: every model's served name, which no adapter may take."""
        spec = im.get("spec") or {}
        base = InferenceModelView.of(im)
        lora = spec.get("lora")
        kept, refused = assign_names(adapters, {base.served_name, *(model_names or ())})
        if not lora:
            why = f"the base model {base.name} has no spec.lora: vLLM runs without LoRA"
            refused |= {view.name: why for _, view in kept}
            kept = []
        wanted = {view.served_name: view for _, view in kept}
        port = int((spec.get("vllm") or {}).get("port", 8000))
        ready = [p for p in pods if pod_ready(p) and (p.get("status") or {}).get("podIP")]
        placements = {v.served_name: Placement() for v in wanted.values()}
        if lora:
            keep = set(wanted) | _static_adapters(im)
            await asyncio.gather(*(self._sync_pod(p, port, wanted, keep, placements) for p in ready))
        for adapter in adapters:
            view = AdapterView.of(adapter)
            placement = placements.get(view.served_name, Placement())
            status = adapter_status(adapter, base.name, len(ready), placement, refused.get(view.name))
            if not same_status(adapter.get("status") or {}, status):
                await self.kube.merge_patch(
                    ADAPTER_PLURAL, view.namespace, view.name, {"status": status}, subresource="status"
                )
                log.info(
                    "adapter status",
                    extra={
                        "adapter": f"{view.namespace}/{view.name}",
                        "phase": status["phase"],
                        "detail": status["message"],
                    },
                )
        return placements

    async def _sync_pod(
        self, pod: Obj, port: int, wanted: dict[str, AdapterView], keep: set[str], placements: dict[str, Placement]
    ) -> None:
        name = pod["metadata"]["name"]
        url = endpoint_url(pod["status"]["podIP"], port)
        try:
            held = await self.api.loaded(url)
        except AdapterCallError as exc:
            for placement in placements.values():
                placement.failures[name] = str(exc)
            return
        for served, view in wanted.items():
            if served in held:
                placements[served].loaded_on.append(name)
                continue
            try:
                await self.api.load(url, served, view.lora_path)
            except AdapterCallError as exc:
                placements[served].failures[name] = str(exc)
                log.warning("cannot load adapter", extra={"adapter": served, "pod": name, "error": str(exc)})
            else:
                placements[served].loaded_on.append(name)
                log.info("adapter loaded", extra={"adapter": served, "pod": name})
        for extra in sorted(held - keep):
            try:
                await self.api.unload(url, extra)
                log.info("adapter unloaded", extra={"adapter": extra, "pod": name})
            except AdapterCallError as exc:
                log.warning("cannot unload adapter", extra={"adapter": extra, "pod": name, "error": str(exc)})
