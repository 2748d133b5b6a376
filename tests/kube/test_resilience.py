"""Lost watches: the API server expires the first watch streams; operator and registry re-list and carry on."""

from __future__ import annotations

from collections.abc import AsyncIterator

import kmock
import pytest

from iir_common.kube import PLURAL, Kube
from iir_registry.catalogue import Catalogue
from iir_registry.sources.kubernetes_source import KubernetesSource
from tests.kube.conftest import Emulator, declare_resources, gpu_node, inference_model
from tests.waiting import eventually

NS = "ml"
GONE = {
    "type": "ERROR",
    "object": {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": 410,
        "reason": "Expired",
        "message": "too old resource version",
    },
}


@pytest.fixture
async def expiring_apiserver() -> AsyncIterator[kmock.KubernetesEmulator]:
    """An API server whose first watches of InferenceModels end at once with 410 Gone."""
    async with Emulator() as emulator, kmock.Server(emulator):
        declare_resources(emulator)
        emulator[f"watch iir.dev/v1alpha1/{PLURAL}"][:2] << (GONE,)
        yield emulator


@pytest.fixture
def apiserver(expiring_apiserver: kmock.KubernetesEmulator) -> kmock.KubernetesEmulator:
    return expiring_apiserver


async def test_operator_and_registry_recover_from_expired_watches(
    kube: Kube, apiserver: kmock.KubernetesEmulator, operator: None
) -> None:
    catalogue = Catalogue()
    source = KubernetesSource(await Kube.connect(str(apiserver.url)), catalogue)
    source.start()
    try:
        await kube.create("nodes", None, gpu_node("gpu-a"))
        await kube.create(PLURAL, NS, inference_model("survivor", gpusPerReplica=1))
        await eventually(lambda: kube.get("deployments", NS, "iir-survivor"))
        await eventually(lambda: catalogue.get("local/survivor"))
        watches = list(apiserver[f"watch iir.dev/v1alpha1/{PLURAL}"])
        assert len(watches) >= 3  # two expired, at least one re-established
    finally:
        await source.stop()
