"""The reconciler with a fake API and cluster view: nodes and pods come from the view (kopf's indexes),
never from listing; a GPU node change re-runs only the waiting models whose fit it changes."""

from __future__ import annotations

import asyncio
from typing import Any

from iir_common.gpus import GpuNode
from iir_common.kube import ApiException
from iir_operator.reconciler import Reconciler
from iir_operator.settings import OperatorSettings

Obj = dict[str, Any]


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.calls: list[str] = []

    async def get(self, plural: str, namespace: str, name: str) -> Obj | None:
        self.calls.append(f"get {plural}")
        return self.objects.get((plural, namespace, name))

    async def create(self, plural: str, namespace: str, body: Obj) -> Obj:
        self.calls.append(f"create {plural}")
        self.objects[(plural, namespace, body["metadata"]["name"])] = body
        return body

    async def merge_patch(self, plural: str, namespace: str, name: str, patch: Obj, subresource: str = "") -> Obj:
        self.calls.append(f"patch {plural}{'/' + subresource if subresource else ''}")
        return self.objects.setdefault((plural, namespace, name), {}) | patch

    async def list(self, *args: Any) -> Any:
        raise AssertionError("a reconcile must not list: nodes and pods come from the indexes")


class View:
    def __init__(self, nodes: list[GpuNode]) -> None:
        self.nodes = nodes

    def gpu_nodes(self) -> list[GpuNode]:
        return self.nodes

    def pods_of(self, namespace: str, model: str) -> list[Obj]:
        return []

    def adapters_of(self, namespace: str, model: str) -> list[Obj]:
        return []

    def model_names(self) -> set[str]:
        return set()


def model(name: str, gpus: int) -> Obj:
    return {
        "apiVersion": "iir.dev/v1alpha1",
        "kind": "InferenceModel",
        "metadata": {"name": name, "namespace": "ml", "uid": f"uid-{name}"},
        "spec": {"source": {"huggingFace": {"id": "x/y"}}, "gpusPerReplica": gpus, "replicas": 1},
        "status": {"phase": "Pending"},
    }


def test_a_node_change_reconciles_only_the_waiting_models_it_lets_fit() -> None:
    kube = FakeKube()
    reconciler = Reconciler(kube, OperatorSettings())  # type: ignore[arg-type]
    small, big = model("small", 2), model("big", 8)
    none = View([])

    async def go() -> tuple[int, int, int]:
        for im in (small, big):
            await reconciler.reconcile(im, none)
        unchanged = await reconciler.reconcile_waiting([small, big], none)
        two = View([GpuNode("n1", "NVIDIA-L4", 24, 2, 2)])
        fits_small = await reconciler.reconcile_waiting([small, big], two)
        again = await reconciler.reconcile_waiting([small, big], View([GpuNode("n2", "NVIDIA-L4", 24, 4, 4)]))
        return unchanged, fits_small, again

    assert asyncio.run(go()) == (0, 1, 0)
    assert not any(call.startswith("list") for call in kube.calls)


class RefusingKube(FakeKube):
    """An API server that refuses the Deployment, as a real one does a spec its schema cannot see into."""

    async def create(self, plural: str, namespace: str, body: Obj) -> Obj:
        if plural == "deployments":
            raise ApiException(
                status=422, reason='POST deployments: Deployment.apps "iir-bad" is invalid: bad toleration'
            )
        return await super().create(plural, namespace, body)


def test_a_refused_deployment_fails_the_model_with_the_servers_message() -> None:
    kube = RefusingKube()
    reconciler = Reconciler(kube, OperatorSettings())  # type: ignore[arg-type]
    im = model("bad", 1)
    asyncio.run(reconciler.reconcile(im, View([GpuNode("n1", "NVIDIA-L4", 24, 2, 2)])))  # no exception: no retry
    status = im["status"]
    assert status["phase"] == "Failed" and status["reason"] == "InvalidSpec"
    assert "is invalid: bad toleration" in status["message"]
    assert "patch inferencemodels/status" in kube.calls


def test_a_deployment_that_cannot_create_pods_fails_the_model() -> None:
    kube = FakeKube()
    reconciler = Reconciler(kube, OperatorSettings())  # type: ignore[arg-type]
    im = model("nopods", 1)
    im["spec"]["priorityClassName"] = "missing"
    kube.objects[("deployments", "ml", "iir-nopods")] = {
        "status": {
            "conditions": [
                {
                    "type": "ReplicaFailure",
                    "status": "True",
                    "reason": "FailedCreate",
                    "message": 'pods "iir-nopods-5d9f" is forbidden: no PriorityClass with name missing was found',
                }
            ]
        }
    }
    asyncio.run(reconciler.reconcile(im, View([GpuNode("n1", "NVIDIA-L4", 24, 2, 2)])))
    status = im["status"]
    assert status["phase"] == "Failed" and status["reason"] == "FailedCreate"
    assert status["message"].startswith("the Deployment cannot create pods: pods")
    assert "no PriorityClass with name missing" in status["message"]
