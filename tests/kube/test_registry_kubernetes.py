"""The registry's Kubernetes source: InferenceModels and EndpointSlices watched into the catalogue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import kmock
import pytest

from iir.v1 import registry_pb2, registry_pb2_grpc
from iir_common.grpc_server import GrpcService
from iir_common.kube import ADAPTER_PLURAL, MODEL_LABEL, PLURAL, Kube
from iir_registry.catalogue import Catalogue
from iir_registry.grpc_api import RegistryServicer
from iir_registry.sources.kubernetes_source import KubernetesSource
from tests.kube.conftest import gpu_node, inference_model, pod
from tests.waiting import eventually

NS = "ml"


def ready_model(name: str, url: str = "http://10.0.0.10:8000") -> dict[str, Any]:
    im = inference_model(name, gpusPerReplica=1, routing={"costTier": "low", "categories": ["chat"]})
    im["status"] = {"phase": "Ready", "readyReplicas": 1, "endpoints": [{"url": url, "ready": True}]}
    return im


def endpoint_slice(model: str, ready: list[bool], port: int = 8000, labeled: bool = True) -> dict[str, Any]:
    """A slice of the model's Service, labelled as the EndpointSlice controller labels it (with the
    Service's own labels, `iir.dev/model` among them)."""
    labels = {"kubernetes.io/service-name": f"iir-{model}", **({MODEL_LABEL: model} if labeled else {})}
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "addressType": "IPv4",
        "metadata": {
            "name": f"iir-{model}-abcde",
            "namespace": NS,
            "labels": labels,
        },
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [
            {
                "addresses": [f"10.1.0.{i}"],
                "conditions": {"ready": r},
                "targetRef": {"kind": "Pod", "name": f"iir-{model}-{i}"},
            }
            for i, r in enumerate(ready)
        ],
    }


def watchers(apiserver: kmock.KubernetesEmulator) -> int:
    """How many watch streams the emulator sends live events to. kmock sends a watch only the events made
    after it subscribed to the resource's bus, and counts the subscribers only there (a private field)."""
    return sum(bus.consumer_count for bus in apiserver._buses.values())


@pytest.fixture
async def source(apiserver: kmock.KubernetesEmulator, kube: Kube) -> AsyncIterator[tuple[Catalogue, KubernetesSource]]:
    """The source, its three watches (models, adapters, slices) following live events."""
    catalogue = Catalogue()
    src = KubernetesSource(await Kube.connect(str(kube.api.configuration.host)), catalogue)
    before = watchers(apiserver)
    src.start()
    await eventually(lambda: watchers(apiserver) >= before + 3, timeout=10)
    yield catalogue, src
    await src.stop()


async def test_models_follow_resources_and_slices(kube: Kube, source: tuple[Catalogue, KubernetesSource]) -> None:
    catalogue, _ = source
    await kube.create(PLURAL, NS, ready_model("alpha"))
    model = await eventually(lambda: catalogue.get("local/alpha"))
    assert model.source == "kubernetes" and model.cost_tier == "low" and list(model.categories) == ["chat"]
    assert [e.url for e in model.endpoints] == ["http://10.0.0.10:8000"]  # from status: no slice yet

    await kube.create("endpointslices", NS, endpoint_slice("alpha", [True, False]))
    model = await eventually(lambda: (m := catalogue.get("local/alpha")) is not None and len(m.endpoints) == 2 and m)
    assert [(e.url, e.ready, e.target) for e in model.endpoints] == [
        ("http://10.1.0.0:8000", True, "iir-alpha-0"),
        ("http://10.1.0.1:8000", False, "iir-alpha-1"),
    ]

    # A slice of some other Service (no `iir.dev/model` label) is not IIR's: it changes nothing. The
    # change of alpha's own slice after it comes down the same watch, so it is through once that one is.
    stranger = endpoint_slice("alpha", [True, True, True], labeled=False)
    stranger["metadata"]["name"] = "other-abcde"
    await kube.create("endpointslices", NS, stranger)
    own = endpoint_slice("alpha", [True, True, True])
    await kube.merge_patch("endpointslices", NS, own["metadata"]["name"], {"endpoints": own["endpoints"]})
    model = await eventually(lambda: (m := catalogue.get("local/alpha")) is not None and m.endpoints[1].ready and m)
    assert [e.url for e in model.endpoints] == ["http://10.1.0.0:8000", "http://10.1.0.1:8000", "http://10.1.0.2:8000"]

    await kube.merge_patch(PLURAL, NS, "alpha", {"spec": {"servedName": "alpha-v2"}})
    await eventually(lambda: catalogue.get("local/alpha-v2"))
    assert catalogue.get("local/alpha") is None

    await kube.delete(PLURAL, NS, "alpha")
    await eventually(lambda: catalogue.get("local/alpha-v2") is None)


async def test_watch_stream_reports_changes_to_subscribers(
    kube: Kube, source: tuple[Catalogue, KubernetesSource]
) -> None:
    catalogue, src = source
    service = GrpcService(
        [lambda s: registry_pb2_grpc.add_RegistryServiceServicer_to_server(RegistryServicer(catalogue, src), s)],
        ["iir.v1.RegistryService"],
        0,
    )
    await service.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            call = stub.Watch(registry_pb2.WatchRequest())
            assert (await call.read()).type == registry_pb2.WatchEvent.SNAPSHOT
            await kube.create(PLURAL, NS, ready_model("beta"))
            event = await asyncio.wait_for(call.read(), 10)
            assert event.type == registry_pb2.WatchEvent.UPSERT and event.model.name == "local/beta"
            await kube.delete(PLURAL, NS, "beta")
            event = await asyncio.wait_for(call.read(), 10)
            assert event.type == registry_pb2.WatchEvent.DELETE and event.model.name == "local/beta"
            call.cancel()

            await kube.create("nodes", None, gpu_node("gpu-a", gpus=8))
            await kube.create(
                "nodes",
                None,
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": "cpu-only"},
                    "status": {"allocatable": {"cpu": "8"}},
                },
            )
            busy = pod("beta", 0)
            await kube.create("pods", NS, busy)
            status = await stub.Status(registry_pb2.StatusRequest())
            assert status.source == "kubernetes" and status.last_refresh > 0
            assert [(n.name, n.product, n.memory_gib, n.allocatable, n.free) for n in status.nodes] == [
                ("gpu-a", "NVIDIA-A100-SXM4-80GB", 80.0, 8, 7)
            ]
            refreshed = await stub.Refresh(registry_pb2.RefreshRequest())
            assert refreshed.source == "kubernetes"
    finally:
        await service.stop(0)


async def test_a_terminating_endpoint_is_draining_and_adapters_follow_their_base(
    kube: Kube, source: tuple[Catalogue, KubernetesSource]
) -> None:
    catalogue, _ = source
    await kube.create(PLURAL, NS, ready_model("beta"))
    await kube.create("endpointslices", NS, endpoint_slice("beta", [True, True]))
    await eventually(lambda: (m := catalogue.get("local/beta")) is not None and len(m.endpoints) == 2)
    adapter = {
        "apiVersion": "iir.dev/v1alpha1",
        "kind": "InferenceAdapter",
        "metadata": {"name": "beta-sql", "namespace": NS},
        "spec": {"baseModel": "beta", "source": {"huggingFace": {"id": "org/beta-sql"}}},
        "status": {"phase": "Ready", "loadedOn": ["iir-beta-0", "iir-beta-1"]},
    }
    await kube.create(ADAPTER_PLURAL, NS, adapter)
    sql = await eventually(lambda: catalogue.get("local/beta-sql"))
    assert sql.base_model == "local/beta" and sql.served_name == "beta-sql" and sql.resource_name == "beta"
    assert [e.target for e in sql.endpoints] == ["iir-beta-0", "iir-beta-1"]

    # Kubernetes marks a stopping pod's endpoint terminating (ready false, serving while it drains).
    sl = endpoint_slice("beta", [True, True])
    sl["endpoints"][1]["conditions"] = {"ready": False, "serving": True, "terminating": True}
    await kube.merge_patch("endpointslices", NS, sl["metadata"]["name"], {"endpoints": sl["endpoints"]})

    def states(name: str) -> list[tuple[bool, bool]] | None:
        m = catalogue.get(name)
        got = [(e.ready, e.draining) for e in m.endpoints] if m else None
        return got if got == [(True, False), (False, True)] else None

    await eventually(lambda: states("local/beta"))
    await eventually(lambda: states("local/beta-sql"))  # the adapter's endpoints are its base's

    await kube.delete(ADAPTER_PLURAL, NS, "beta-sql")
    await eventually(lambda: catalogue.get("local/beta-sql") is None)
    assert catalogue.get("local/beta") is not None


async def test_a_scale_write_moves_the_deployment_and_status_reports_the_pods(kube: Kube, operator: None) -> None:
    """What `kubectl scale` (the scale subresource) and an HPA write is spec.replicas; the operator follows."""
    await kube.create("nodes", None, gpu_node("gpu-a"))
    await kube.create(PLURAL, NS, inference_model("gamma", gpusPerReplica=1, replicas=1))
    await eventually(lambda: kube.get("deployments", NS, "iir-gamma"))
    await kube.merge_patch(PLURAL, NS, "gamma", {"spec": {"replicas": 3}})

    async def replicas() -> bool:
        dep = await kube.get("deployments", NS, "iir-gamma")
        return bool(dep and dep["spec"]["replicas"] == 3)

    await eventually(replicas)
    for i in range(2):
        await kube.create("pods", NS, pod("gamma", i))

    async def counted() -> dict[str, Any] | None:
        im = await kube.get(PLURAL, NS, "gamma")
        status = (im or {}).get("status") or {}
        return status if status.get("replicas") == 2 else None

    status = await eventually(counted)
    assert status["selector"] == "iir.dev/model=gamma" and status["readyReplicas"] == 2


async def test_an_adapter_cannot_take_a_models_name(kube: Kube, source: tuple[Catalogue, KubernetesSource]) -> None:
    """A tenant's adapter named after another team's model would capture its traffic: it is not listed,
    and the model stays listed on its own endpoints."""
    catalogue, src = source
    victim = ready_model("shared-llm", url="http://10.0.0.99:8000")
    victim["metadata"]["namespace"] = "team-a"
    await kube.create(PLURAL, "team-a", victim)
    await kube.create(PLURAL, NS, ready_model("attacker-base"))
    hijack = {
        "apiVersion": "iir.dev/v1alpha1",
        "kind": "InferenceAdapter",
        "metadata": {"name": "hijack", "namespace": NS},
        "spec": {"baseModel": "attacker-base", "servedName": "shared-llm", "source": {"path": "/x"}},
        "status": {"phase": "Ready", "loadedOn": ["attacker-base"]},
    }
    await kube.create(ADAPTER_PLURAL, NS, hijack)
    await kube.merge_patch(PLURAL, NS, "attacker-base", {"metadata": {"labels": {"touched": "1"}}})

    def held() -> bool:  # the source has applied the adapter and its base's change (and published them)
        labels = src.objects[PLURAL].get((NS, "attacker-base"), {}).get("metadata", {}).get("labels") or {}
        return (NS, "hijack") in src.objects[ADAPTER_PLURAL] and "touched" in labels

    await eventually(held)
    model = catalogue.get("local/shared-llm")
    assert model is not None and not model.base_model and [e.url for e in model.endpoints] == ["http://10.0.0.99:8000"]
    await kube.delete(ADAPTER_PLURAL, NS, "hijack")
    await eventually(lambda: (NS, "hijack") not in src.objects[ADAPTER_PLURAL])
    assert catalogue.get("local/shared-llm") is not None  # deleting the refused adapter leaves the model
