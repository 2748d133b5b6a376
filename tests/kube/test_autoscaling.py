"""The operator's autoscaler against the API emulator: its decisions from given figures, and the real
machinery (kopf, the registry's gRPC Watch, a gateway's ReportDemand) scaling a model to zero and back."""

from __future__ import annotations

import time
from typing import Any

import grpc
import kmock
import yaml

from iir.v1 import registry_pb2, registry_pb2_grpc
from iir_common.kube import PLURAL, Kube
from iir_operator.autoscaling.scaler import Autoscaler
from iir_operator.autoscaling.signals import RegistrySignals
from tests.kube.conftest import inference_model, running_operator, running_registry
from tests.kube.test_operator import events_for
from tests.waiting import eventually

NS = "ml"
CRD = "deploy/crds/inferencemodels.iir.dev.yaml"
Event = registry_pb2.WatchEvent


def test_the_crd_offers_the_scale_subresource_on_fields_the_operator_keeps() -> None:
    with open(CRD) as f:
        version = yaml.safe_load(f)["spec"]["versions"][0]
    scale = version["subresources"]["scale"]
    assert scale == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert {"replicas", "selector", "autoscaling"} <= set(status)
    assert "ScaledToZero" in status["phase"]["enum"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def figures(signals: RegistrySignals, name: str, load: list[tuple[float, float]], held: int = 0) -> None:
    """Gives the signals what the registry would send: the model with one ready endpoint per (running,
    waiting) pair, those figures, and the gateways' held requests."""
    urls = [f"http://10.0.0.{i}:8000" for i in range(len(load))]
    model = registry_pb2.Model(
        name=f"local/{name}",
        namespace=NS,
        resource_name=name,
        endpoints=[registry_pb2.Endpoint(url=u, ready=True) for u in urls],
    )
    signals.apply(Event(type=Event.SNAPSHOT, models=[model]))
    metrics = [registry_pb2.EndpointMetrics(url=u, running=r, waiting=w) for u, (r, w) in zip(urls, load, strict=True)]
    signals.apply(Event(type=Event.METRICS, metrics=metrics))
    signals.apply(Event(type=Event.DEMAND, demand=[registry_pb2.ModelDemand(model=f"local/{name}", held=held)]))


async def test_decisions_from_given_figures_are_written_to_spec_replicas(kube: Kube) -> None:
    autoscaling = {
        "minReplicas": 0,
        "maxReplicas": 4,
        "targetRequestsPerReplica": 4,
        "scaleDownWindowSeconds": 60,
        "scaleToZeroAfterSeconds": 300,
    }
    await kube.create(PLURAL, NS, inference_model("m", replicas=1, autoscaling=autoscaling))
    clock = Clock()
    signals = RegistrySignals(grpc.aio.insecure_channel("127.0.0.1:9"))
    scaler = Autoscaler(kube, signals, lambda: [], clock=clock)

    async def decide() -> tuple[int | None, dict[str, Any]]:
        im = await kube.get(PLURAL, NS, "m")
        assert im is not None
        written = await scaler.evaluate(im)
        after = await kube.get(PLURAL, NS, "m")
        assert after is not None
        return written, after

    figures(signals, "m", [(8, 6)])  # 14 requests at 4 per replica
    written, im = await decide()
    assert written == 4 and im["spec"]["replicas"] == 4
    message = im["status"]["autoscaling"]["message"]
    assert "1 → 4 replicas" in message and "running 8, waiting 6, held 0" in message

    figures(signals, "m", [(2, 0)] * 4)  # 8 requests: 2 replicas would do, but the down window holds
    clock.now += 30
    assert (await decide())[0] is None
    clock.now += 31  # the 4 left the 60 s window
    written, im = await decide()
    assert written == 2 and im["spec"]["replicas"] == 2

    figures(signals, "m", [(0, 0)] * 2)  # idle: one replica stays until the idle window passes
    clock.now += 61
    assert (await decide())[0] == 1
    clock.now += 301
    written, im = await decide()
    assert written == 0 and "no request for" in im["status"]["autoscaling"]["message"]

    figures(signals, "m", [], held=3)  # requests held by gateways: back at once, no window
    clock.now += 1
    written, im = await decide()
    assert written == 1 and "held 3" in im["status"]["autoscaling"]["message"]


async def test_held_requests_scale_from_zero_at_once_and_idle_scales_to_zero(
    apiserver: kmock.KubernetesEmulator, kube: Kube
) -> None:
    autoscaling = {"minReplicas": 0, "maxReplicas": 2, "scaleDownWindowSeconds": 0, "scaleToZeroAfterSeconds": 1}
    async with (
        running_registry(apiserver) as registry_port,
        running_operator(apiserver, registry_addr=f"127.0.0.1:{registry_port}", autoscale_interval_s=3),
    ):
        await kube.create(PLURAL, NS, inference_model("cold", replicas=0, autoscaling=autoscaling))

        async def phase(want: str) -> dict[str, Any] | None:
            im = await kube.get(PLURAL, NS, "cold")
            status = (im or {}).get("status") or {}
            return status if status.get("phase") == want else None

        status = await eventually(lambda: phase("ScaledToZero"), timeout=5)
        assert status["selector"] == "iir.dev/model=cold" and status["replicas"] == 0
        assert "the next request starts one" in status["message"]
        dep = await kube.get("deployments", NS, "iir-cold")
        assert dep is not None and dep["spec"]["replicas"] == 0

        async with grpc.aio.insecure_channel(f"127.0.0.1:{registry_port}") as channel:
            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            held = registry_pb2.DemandReport(
                gateway="gw-1", models=[registry_pb2.ModelDemand(model="local/cold", held=2)]
            )
            started = time.monotonic()
            await stub.ReportDemand(held)

            async def deployment_replicas(n: int) -> bool:
                dep = await kube.get("deployments", NS, "iir-cold")
                return dep is not None and dep["spec"]["replicas"] == n

            await eventually(lambda: deployment_replicas(1), timeout=5)
            took = time.monotonic() - started
            assert took < 2, f"demand took {took:.1f}s to reach the Deployment (the autoscaler ticks every 3 s)"
            event = await eventually(lambda: event_of(kube, "ScaledFromZero"))
            assert "0 → 1 replicas" in event["message"] and "held 2" in event["message"]

            await stub.ReportDemand(registry_pb2.DemandReport(gateway="gw-1"))  # nothing held any more
            await eventually(lambda: deployment_replicas(0), timeout=10)
            await eventually(lambda: phase("ScaledToZero"), timeout=5)
            event = await eventually(lambda: event_of(kube, "ScaledToZero", "1 → 0 replicas"))
            assert "no request for" in event["message"]


async def event_of(kube: Kube, reason: str, text: str = "") -> dict[str, Any] | None:
    return next((e for e in await events_for(kube, "cold") if e["reason"] == reason and text in e["message"]), None)
