"""A stateful Kubernetes API emulator (kmock) over HTTP, and the real operator (kopf) running against it."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import grpc
import kmock
import kopf
import pytest

from iir.v1 import registry_pb2_grpc
from iir_common.kube import ADAPTER_PLURAL, GROUP, PLURAL, VERSION, Kube
from iir_dev.stack import Stack
from iir_operator.handlers import build_registry
from iir_operator.settings import OperatorSettings
from iir_registry.catalogue import Catalogue
from iir_registry.grpc_api import RegistryServicer
from iir_registry.sources.kubernetes_source import KubernetesSource
from tests.conftest import MASTER_KEY

Obj = dict[str, Any]
A100 = "NVIDIA-A100-SXM4-80GB"


class Emulator(kmock.KubernetesEmulator):
    """kmock, plus `metadata.generateName` (kopf names its Events that way)."""

    async def _handle(self, request: Any) -> Any:
        data = request.data
        if request.action == kmock.action.CREATE and isinstance(data, dict):
            meta = data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:6]
        return await super()._handle(request)


def declare_resources(emulator: kmock.KubernetesEmulator) -> None:
    """The built-in kinds, and IIR's CRDs as the API server would serve them."""
    emulator.resources.load_bundled()
    emulator.resources[f"{GROUP}/{VERSION}/{PLURAL}"] = kmock.ResourceInfo(
        kind="InferenceModel",
        namespaced=True,
        subresources={"status", "scale"},
        verbs={"list", "watch", "get", "create", "patch", "update", "delete"},
    )
    emulator.resources[f"{GROUP}/{VERSION}/{ADAPTER_PLURAL}"] = kmock.ResourceInfo(
        kind="InferenceAdapter",
        namespaced=True,
        subresources={"status"},
        verbs={"list", "watch", "get", "create", "patch", "update", "delete"},
    )


@pytest.fixture
async def apiserver() -> AsyncIterator[kmock.KubernetesEmulator]:
    async with Emulator() as emulator, kmock.Server(emulator):
        declare_resources(emulator)
        yield emulator


@pytest.fixture
async def kube(apiserver: kmock.KubernetesEmulator) -> AsyncIterator[Kube]:
    client = await Kube.connect(str(apiserver.url))
    yield client
    await client.close()


@contextlib.asynccontextmanager
async def in_background(work: Coroutine[Any, Any, Any]) -> AsyncIterator[None]:
    """Runs `work` as a task for the duration of the block, then cancels it."""
    task = asyncio.create_task(work)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def running_operator(apiserver: kmock.KubernetesEmulator, **settings: Any) -> AsyncIterator[None]:
    """The operator's real kopf machinery, watching the emulator (objects made after it starts)."""
    options = OperatorSettings(kube_server=str(apiserver.url), **settings)
    ready = asyncio.Event()
    registry = build_registry(options)
    async with in_background(kopf.operator(registry=registry, standalone=True, clusterwide=True, ready_flag=ready)):
        await asyncio.wait_for(ready.wait(), 10)
        await asyncio.sleep(0.5)  # the watch streams open just after readiness
        yield


@pytest.fixture
async def operator(apiserver: kmock.KubernetesEmulator) -> AsyncIterator[None]:
    async with running_operator(apiserver):
        yield


@contextlib.asynccontextmanager
async def running_registry(apiserver: kmock.KubernetesEmulator) -> AsyncIterator[int]:
    """The registry's gRPC service in this loop, following the emulator; yields its port."""
    catalogue = Catalogue()
    source = KubernetesSource(await Kube.connect(str(apiserver.url)), catalogue)
    source.start()
    servicer = RegistryServicer(catalogue, source)
    server = grpc.aio.server()
    registry_pb2_grpc.add_RegistryServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield port
    finally:
        # grpc's aio server re-raises the cancellation of a Watch still streaming when it stops.
        with contextlib.suppress(asyncio.CancelledError):
            await server.stop(0)
        await source.stop()


@contextlib.asynccontextmanager
async def kube_stack(
    workdir: Path, apiserver: kmock.KubernetesEmulator, database_url: str, redis_url: str, **env: str
) -> AsyncIterator[Stack]:
    """IIR's processes (gateway, auth, registry, classifier) with the registry following the emulator."""
    stack = Stack(
        workdir=workdir,
        database_url=database_url,
        redis_url=redis_url,
        master_key=MASTER_KEY,
        env={"IIR_REGISTRY_SOURCE": "kubernetes", "IIR_KUBE_SERVER": str(apiserver.url), **env},
    )
    await asyncio.to_thread(stack.start)  # the emulator must keep serving while the processes start
    try:
        yield stack
    finally:
        await asyncio.to_thread(stack.stop)


def inference_model(name: str, namespace: str = "ml", **spec: Any) -> Obj:
    body: Obj = {"source": {"huggingFace": {"id": "meta-llama/Meta-Llama-3-8B-Instruct"}}, "replicas": 1, **spec}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceModel",
        # kmock keeps no resourceVersion; kopf guards its patches with a test on it.
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "generation": 1,
            "resourceVersion": "1",
        },
        "spec": body,
    }


def gpu_node(name: str, product: str = A100, gpus: int = 8, memory_mib: int | None = None) -> Obj:
    labels = {"nvidia.com/gpu.product": product}
    if memory_mib:
        labels["nvidia.com/gpu.memory"] = str(memory_mib)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "status": {"allocatable": {"nvidia.com/gpu": str(gpus), "cpu": "64"}},
    }


def pod(
    model: str,
    index: int,
    namespace: str = "ml",
    ready: bool = True,
    ip: str = "10.0.0.{i}",
    waiting: tuple[str, str] | None = None,
) -> Obj:
    """A vLLM pod as the Deployment controller and kubelet would leave it (there are none here)."""
    status: Obj = {
        "phase": "Running",
        "podIP": ip.format(i=index + 10),
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "True" if ready else "False"},
        ],
    }
    if waiting:
        status["containerStatuses"] = [
            {"name": "vllm", "ready": False, "state": {"waiting": {"reason": waiting[0], "message": waiting[1]}}}
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"iir-{model}-{index}",
            "namespace": namespace,
            "labels": {"iir.dev/model": model, "app.kubernetes.io/managed-by": "iir-operator"},
        },
        "spec": {
            "nodeName": "gpu-a",
            "containers": [{"name": "vllm", "image": "vllm", "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
        },
        "status": status,
    }
