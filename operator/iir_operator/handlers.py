"""kopf handlers, registered on a registry of their own (so tests and `kopf run` use the same set)."""

from __future__ import annotations

import logging
import random
from typing import Any

import kopf

from iir_common.kube import GPU_RESOURCE, GROUP, MODEL_LABEL, PLURAL, VERSION, Kube
from iir_operator.reconciler import Reconciler
from iir_operator.settings import OperatorSettings

log = logging.getLogger(__name__)


class OperatorState:
    """The API client and reconciler, made at operator start-up."""

    def __init__(self, settings: OperatorSettings) -> None:
        self.settings = settings
        self.kube: Kube | None = None
        self.reconciler: Reconciler | None = None

    async def start(self) -> Reconciler:
        self.kube = await Kube.connect(self.settings.kube_server)
        self.reconciler = Reconciler(self.kube, self.settings)
        return self.reconciler

    def need(self) -> Reconciler:
        assert self.reconciler is not None, "operator not started"
        return self.reconciler


def build_registry(settings: OperatorSettings) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    state = OperatorState(settings)
    owned = {"labels": {MODEL_LABEL: kopf.PRESENT}, "registry": registry}

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.level = logging.INFO
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        # Replicas of equal priority would all freeze: a random priority elects one active operator.
        settings.peering.priority = random.randint(1, 2**31)
        await state.start()

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        if state.kube is not None:
            await state.kube.close()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        if settings.kube_server:
            return kopf.ConnectionInfo(server=settings.kube_server, insecure=True)
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.probe(id="reconciler", registry=registry)
    def probe(**_: Any) -> bool:
        return state.reconciler is not None

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=registry)
    async def model_changed(body: kopf.Body, **_: Any) -> None:
        await state.need().reconcile(dict(body))

    # No timers: kopf would put a finalizer on every model for them. Drift and GPU capacity are events.
    @kopf.on.event(
        "",
        "v1",
        "nodes",
        registry=registry,
        when=lambda body, **_: GPU_RESOURCE in ((body.get("status") or {}).get("allocatable") or {}),
    )
    async def gpu_node_changed(**_: Any) -> None:
        """A GPU node came, went or changed: models waiting for capacity may fit now."""
        await state.need().reconcile_waiting()

    async def owner_changed(body: kopf.Body, **_: Any) -> None:
        meta = body.get("metadata") or {}
        model = (meta.get("labels") or {}).get(MODEL_LABEL)
        if model and meta.get("namespace"):
            await state.need().reconcile_named(meta["namespace"], model)

    # Whatever happens to what the operator owns (edits, deletion, pods starting or failing)
    # re-runs the model's reconcile: drift is repaired and the status follows.
    kopf.on.event("apps", "v1", "deployments", **owned)(owner_changed)
    kopf.on.event("", "v1", "services", **owned)(owner_changed)
    kopf.on.event("", "v1", "pods", **owned)(owner_changed)
    return registry
