"""kopf handlers, registered on a registry of their own (so tests and `kopf run` use the same set)."""

from __future__ import annotations

import logging
import random
from typing import Any

import kopf

from iir_common.kube import ADAPTER_PLURAL, GPU_RESOURCE, GROUP, MODEL_LABEL, PLURAL, VERSION, Kube
from iir_operator.autoscaling.runner import Autoscaling, start_autoscaler
from iir_operator.cluster_view import IndexedCluster, Obj
from iir_operator.reconciler import Reconciler
from iir_operator.settings import OperatorSettings

log = logging.getLogger(__name__)


def _has_gpus(body: kopf.Body, **_: Any) -> bool:
    return GPU_RESOURCE in ((body.get("status") or {}).get("allocatable") or {})


def build_registry(settings: OperatorSettings) -> kopf.OperatorRegistry:
    """The operator's handlers. Its state is kopf's `memo` (`memo.reconciler`, made at start-up); what
    reconciles read of nodes, pods and other models comes from kopf's indexes, kept by their watches."""
    registry = kopf.OperatorRegistry()
    owned: dict[str, Any] = {"labels": {MODEL_LABEL: kopf.PRESENT}}

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
        settings.posting.level = logging.INFO
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        # Replicas of equal priority would all freeze: a random priority elects one active operator.
        settings.peering.priority = random.randint(1, 2**31)
        memo.reconciler = Reconciler(await Kube.connect(operator_settings.kube_server), operator_settings)
        memo.autoscaling = start_autoscaler(operator_settings, memo.reconciler.kube, kwargs["models_by_key"])

    operator_settings = settings

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        autoscaling: Autoscaling | None = memo.get("autoscaling")
        if autoscaling is not None:
            await autoscaling.stop()
        reconciler: Reconciler | None = memo.get("reconciler")
        if reconciler is not None:
            await reconciler.adapters.api.close()
            await reconciler.kube.close()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        if operator_settings.kube_server:
            return kopf.ConnectionInfo(server=operator_settings.kube_server, insecure=True)
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.probe(id="reconciler", registry=registry)
    def probe(memo: kopf.Memo, **_: Any) -> bool:
        return memo.get("reconciler") is not None

    @kopf.index("", "v1", "nodes", id="gpu_nodes_by_name", when=_has_gpus, registry=registry)
    def gpu_nodes_by_name(name: str, body: kopf.Body, **_: Any) -> dict[str, Obj]:
        return {name: {"metadata": dict(body.metadata), "status": dict(body.status)}}

    @kopf.index("", "v1", "pods", id="pods_by_model", labels={MODEL_LABEL: kopf.PRESENT}, registry=registry)
    def pods_by_model(
        namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
    ) -> dict[tuple[str, str], Obj]:
        return {(namespace or "", labels[MODEL_LABEL]): dict(body)}

    @kopf.index(GROUP, VERSION, PLURAL, id="models_by_key", registry=registry)
    def models_by_key(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[tuple[str, str], Obj]:
        return {(namespace or "", name): dict(body)}

    @kopf.index(GROUP, VERSION, ADAPTER_PLURAL, id="adapters_by_model", registry=registry)
    def adapters_by_model(
        namespace: str | None, spec: kopf.Spec, body: kopf.Body, **_: Any
    ) -> dict[tuple[str, str], Obj]:
        return {(namespace or "", str(spec.get("baseModel", ""))): dict(body)}

    def cluster(kwargs: dict[str, Any]) -> IndexedCluster:
        return IndexedCluster(
            kwargs["gpu_nodes_by_name"], kwargs["pods_by_model"], kwargs["adapters_by_model"], kwargs["models_by_key"]
        )

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=registry)
    async def model_changed(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
        await memo.reconciler.reconcile(dict(body), cluster(kwargs))

    # No timers: kopf would put a finalizer on every model for them. Drift and GPU capacity are events.
    @kopf.on.event("", "v1", "nodes", registry=registry, when=_has_gpus)
    async def gpu_node_changed(memo: kopf.Memo, **kwargs: Any) -> None:
        """A GPU node came, went or changed: the waiting models whose plan it changes may fit now."""
        models = [im for store in kwargs["models_by_key"].values() for im in store]
        await memo.reconciler.reconcile_waiting(models, cluster(kwargs))

    async def owner_changed(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
        meta = body.get("metadata") or {}
        model = (meta.get("labels") or {}).get(MODEL_LABEL)
        if model and meta.get("namespace"):
            await memo.reconciler.reconcile_named(meta["namespace"], model, cluster(kwargs))

    # Whatever happens to what the operator owns (edits, deletion, pods starting or failing)
    # re-runs the model's reconcile: drift is repaired and the status follows.
    kopf.on.event("apps", "v1", "deployments", registry=registry, **owned)(owner_changed)
    kopf.on.event("", "v1", "services", registry=registry, **owned)(owner_changed)
    kopf.on.event("", "v1", "pods", registry=registry, **owned)(owner_changed)

    @kopf.on.event(GROUP, VERSION, ADAPTER_PLURAL, registry=registry)
    async def adapter_changed(
        namespace: str | None, spec: kopf.Spec, memo: kopf.Memo, type: str | None, **kwargs: Any
    ) -> None:
        """An adapter came, changed or went: its base model's replicas are brought to hold what they should
        (no finalizer: a deleted adapter is unloaded by the run its deletion triggers, or the next one)."""
        if namespace and spec.get("baseModel") and type is not None:  # None: the initial listing's replay
            await memo.reconciler.reconcile_named(namespace, str(spec["baseModel"]), cluster(kwargs))

    return registry
