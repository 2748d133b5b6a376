"""Local models from InferenceModel resources, with endpoints from their Services' EndpointSlices, and
their LoRA adapters from InferenceAdapter resources (on the endpoints that hold them).

Both are watched (list, then watch from the list's resourceVersion; on expiry or error, list again),
so a new, scaled or removed model reaches the catalogue, and from there every gateway, at once. Only
the EndpointSlices of IIR's model Services are watched (they carry the Service's `iir.dev/model` label,
as the EndpointSlice controller copies a Service's labels), and an event recomputes only its model.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

import aiohttp

from iir.v1 import registry_pb2
from iir_common.gpus import GpuNode, gpu_nodes
from iir_common.inference_model import InferenceModelView
from iir_common.kube import ADAPTER_PLURAL, MODEL_LABEL, PLURAL, ApiException, Kube, Obj, endpoint_url, service_name
from iir_registry.catalogue import Catalogue
from iir_registry.resource_mapping import adapter_models, model_from_resource

log = logging.getLogger(__name__)

SOURCE = "kubernetes"
SERVICE_LABEL = "kubernetes.io/service-name"
KV_EVENTS_PORT = "kv-events"  # the vLLM container's named ports of its KV event sockets (operator manifests)
KV_REPLAY_PORT = "kv-replay"
_WATCHED = (PLURAL, ADAPTER_PLURAL, "endpointslices")
_SELECTORS = {PLURAL: "", ADAPTER_PLURAL: "", "endpointslices": MODEL_LABEL}


def _key(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace", ""), meta.get("name", "")


def _wanted(plural: str, obj: Obj) -> bool:
    return plural != "endpointslices" or MODEL_LABEL in ((obj.get("metadata") or {}).get("labels") or {})


def _model_of(plural: str, obj: Obj) -> tuple[str, str]:
    """The (namespace, InferenceModel name) an object belongs to."""
    meta = obj.get("metadata") or {}
    if plural == PLURAL:
        return meta.get("namespace", ""), meta.get("name", "")
    if plural == ADAPTER_PLURAL:
        return meta.get("namespace", ""), str((obj.get("spec") or {}).get("baseModel", ""))
    return meta.get("namespace", ""), (meta.get("labels") or {}).get(MODEL_LABEL, "")


def _zmq_address(address: str, port: int | None) -> str:
    if not port:
        return ""
    return f"tcp://[{address}]:{port}" if ":" in address else f"tcp://{address}:{port}"


def slice_endpoints(slices: Iterable[Obj]) -> list[registry_pb2.Endpoint]:
    """Endpoints of EndpointSlices. An endpoint whose readiness is unknown counts as ready (as kube-proxy
    does); a terminating one that still serves is draining: no new request, its own finish their course.
    The ports named kv-events and kv-replay give the pod's KV event sockets."""
    out = []
    for sl in slices:
        ports = sl.get("ports") or []
        port = next((p.get("port") for p in ports if p.get("name") == "http"), ports[0].get("port") if ports else None)
        if not port:
            continue
        named = {p.get("name"): p.get("port") for p in ports}
        for ep in sl.get("endpoints") or []:
            conditions = ep.get("conditions") or {}
            terminating = conditions.get("terminating") is True
            ready = conditions.get("ready") is not False and not terminating
            draining = terminating and conditions.get("serving", conditions.get("ready")) is not False
            target = (ep.get("targetRef") or {}).get("name", "")
            for addr in ep.get("addresses") or []:
                out.append(
                    registry_pb2.Endpoint(
                        url=endpoint_url(addr, port),
                        ready=ready,
                        target=target,
                        draining=draining,
                        kv_events=_zmq_address(addr, named.get(KV_EVENTS_PORT)),
                        kv_events_replay=_zmq_address(addr, named.get(KV_REPLAY_PORT)),
                    )
                )
    return sorted(out, key=lambda e: e.url)


class KubernetesSource:
    name = SOURCE

    def __init__(self, kube: Kube, catalogue: Catalogue, namespace: str | None = None) -> None:
        self.kube = kube
        self.catalogue = catalogue
        self.namespace = namespace or None
        self.objects: dict[str, dict[tuple[str, str], Obj]] = {p: {} for p in _WATCHED}
        self.last_refresh = 0.0
        self._published: dict[tuple[str, str], set[str]] = {}  # (namespace, name) → its catalogue names
        self._tasks: list[asyncio.Task[None]] = []
        self._adapters_missing = False

    def _slices_of(self, namespace: str, name: str) -> list[Obj]:
        service = service_name(name)
        return [
            sl
            for (ns, _), sl in self.objects["endpointslices"].items()
            if ns == namespace and (sl.get("metadata", {}).get("labels") or {}).get(SERVICE_LABEL) == service
        ]

    def _model_names(self) -> set[str]:
        """Every model's served name: an adapter takes none of them, in any namespace (it would capture
        that model's traffic)."""
        return {InferenceModelView.of(m).served_name for m in self.objects[PLURAL].values()}

    def _models(self, key: tuple[str, str], model_names: set[str]) -> list[registry_pb2.Model]:
        """The model `key` (namespace, InferenceModel name) and its adapters; none when it is not held."""
        im = self.objects[PLURAL].get(key)
        if im is None:
            return []
        slices = self._slices_of(*key)
        base = model_from_resource(im, SOURCE, endpoints=slice_endpoints(slices) if slices else None)
        adapters = [a for a in self.objects[ADAPTER_PLURAL].values() if _model_of(ADAPTER_PLURAL, a) == key]
        return [base, *adapter_models(base, adapters, model_names)]

    def publish(self) -> None:
        """Makes the catalogue's models of this source exactly those of the objects held (after a list)."""
        self._published = {}
        models = []
        model_names = self._model_names()  # once for the whole listing
        for key in self.objects[PLURAL]:
            found = self._models(key, model_names)
            models += found
            self._published[key] = {m.name for m in found}
        self.catalogue.replace_source(SOURCE, models)

    def publish_one(self, key: tuple[str, str]) -> None:
        """Recomputes the model `key` (namespace, InferenceModel name) and its adapters after an event."""
        models = self._models(key, self._model_names())
        names = {m.name for m in models}
        for gone in self._published.pop(key, set()) - names:
            if not any(gone in other for other in self._published.values()):
                self.catalogue.delete(gone)  # deleted, or its served name changed
        if names:
            self._published[key] = names
        for model in models:
            self.catalogue.upsert(model)

    async def relist(self, plural: str) -> str | None:
        """Lists `plural` afresh; None when the InferenceAdapter CRD is not installed (an older chart):
        then there are no adapters, and models are served without them."""
        try:
            items, version = await self.kube.list(plural, self.namespace, _SELECTORS[plural])
        except ApiException as exc:
            if exc.status != 404 or plural != ADAPTER_PLURAL:
                raise
            if self.objects[plural] or not self._adapters_missing:
                log.warning("the InferenceAdapter CRD is not installed; serving no adapters")
            self._adapters_missing = True
            items, version = [], None
        self.objects[plural] = {_key(o): o for o in items if _wanted(plural, o)}
        self.last_refresh = time.time()
        self.publish()
        return version

    async def refresh(self) -> None:
        for plural in _WATCHED:
            await self.relist(plural)

    def apply(self, plural: str, event: Obj) -> bool:
        """Applies one watch event; False when the watch must restart from a fresh list."""
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            log.info("watch expired; listing again", extra={"resource": plural, "detail": obj.get("message")})
            return False
        if kind == "BOOKMARK":
            return True
        if not _wanted(plural, obj):  # a server that ignored the label selector
            return True
        if kind == "DELETED":
            self.objects[plural].pop(_key(obj), None)
        else:
            self.objects[plural][_key(obj)] = obj
        self.publish_one(_model_of(plural, obj))
        return True

    async def follow(self, plural: str) -> None:
        backoff = 0.2
        while True:
            try:
                version = await self.relist(plural)
                backoff = 0.2
                if version is None:
                    await asyncio.sleep(30)  # the CRD may be installed later
                    continue
                async for event in self.kube.watch(plural, self.namespace, version, label_selector=_SELECTORS[plural]):
                    if not self.apply(plural, event):
                        break
            except (ApiException, aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.warning("kubernetes watch failed; retrying", extra={"resource": plural, "error": repr(exc)[:300]})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self.follow(p), name=f"watch-{p}") for p in _WATCHED]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.kube.close()

    async def gpu_nodes(self) -> list[GpuNode]:
        nodes, _ = await self.kube.list("nodes")
        pods, _ = await self.kube.list("pods")
        return gpu_nodes(nodes, pods)
