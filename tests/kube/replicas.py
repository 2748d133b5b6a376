"""A model's replicas as the Deployment controller, the kubelet and the EndpointSlice controller would
keep them (an emulator has none of the three): simulated vLLM processes as its pods, each published as a
ready endpoint; one that stops is first marked terminating, drained by the pods' real preStop hook, and
only then stopped and removed."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from dataclasses import dataclass

from iir_common.kube import MODEL_LABEL, Kube, service_name
from iir_dev import datastores
from iir_operator.drain import pre_stop
from tests.conftest import start_sim
from tests.kube.conftest import in_background, pod


@dataclass
class Replica:
    name: str
    port: int
    process: subprocess.Popen[bytes]


class Replicas:
    def __init__(self, kube: Kube, model: str, namespace: str = "ml", drain_s: int = 30, **sim_env: str) -> None:
        self.kube = kube
        self.model = model
        self.namespace = namespace
        self.drain_s = drain_s
        self.sim_env = {"models": model, **sim_env}
        self.live: list[Replica] = []
        self.drained: list[Replica] = []
        self.drain_seconds: list[float] = []  # how long each stop's preStop hook took
        self._index = 0

    def _slice(self, replica: Replica, ready: bool, terminating: bool) -> dict[str, object]:
        return {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": replica.name,
                "namespace": self.namespace,
                "labels": {"kubernetes.io/service-name": service_name(self.model), MODEL_LABEL: self.model},
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": replica.port, "protocol": "TCP"}],
            "endpoints": [
                {
                    "addresses": ["127.0.0.1"],
                    "conditions": {"ready": ready, "serving": True, "terminating": terminating},
                    "targetRef": {"kind": "Pod", "name": replica.name, "namespace": self.namespace},
                }
            ],
        }

    async def add(self) -> Replica:
        """Starts a replica and publishes it ready (as once its readiness probe passes)."""
        port = datastores.free_port()
        process = await asyncio.to_thread(start_sim, port, **self.sim_env)
        body = pod(self.model, self._index, self.namespace, ip="127.0.0.1")
        self._index += 1
        replica = Replica(body["metadata"]["name"], port, process)
        await self.kube.create("pods", self.namespace, body)
        await self.kube.create("endpointslices", self.namespace, self._slice(replica, ready=True, terminating=False))
        self.live.append(replica)
        return replica

    async def stop(self, replica: Replica) -> float:
        """Stops it as Kubernetes stops a pod: terminating endpoint, preStop hook, then the process ends.
        Returns how long the hook took."""
        self.live.remove(replica)
        await self.kube.merge_patch(
            "endpointslices", self.namespace, replica.name, self._slice(replica, ready=False, terminating=True)
        )
        command = pre_stop(replica.port, self.drain_s)["exec"]["command"]  # type: ignore[index]
        started = asyncio.get_running_loop().time()
        await asyncio.to_thread(subprocess.run, [sys.executable, *command[1:]], check=True, timeout=self.drain_s + 30)
        took = asyncio.get_running_loop().time() - started
        # Killed, not asked to stop: nothing may rest on the server's own graceful shutdown.
        replica.process.kill()
        await asyncio.to_thread(replica.process.wait, 10)
        await self.kube.delete("endpointslices", self.namespace, replica.name)
        await self.kube.delete("pods", self.namespace, replica.name)
        self.drained.append(replica)
        self.drain_seconds.append(took)
        return took

    async def follow_deployment(self, interval_s: float = 0.1) -> None:
        """Keeps as many replicas as the operator's Deployment asks for (new first, then the oldest stops)."""
        name = service_name(self.model)
        while True:
            dep = await self.kube.get("deployments", self.namespace, name)
            want = int(((dep or {}).get("spec") or {}).get("replicas", 0)) if dep else len(self.live)
            if want > len(self.live):
                await self.add()
            elif want < len(self.live):
                await self.stop(self.live[0])
            else:
                await asyncio.sleep(interval_s)

    def following_deployment(self) -> contextlib.AbstractAsyncContextManager[None]:
        return in_background(self.follow_deployment())

    def close(self) -> None:
        for replica in self.live + self.drained:
            if replica.process.poll() is None:
                replica.process.kill()
                replica.process.wait(10)
