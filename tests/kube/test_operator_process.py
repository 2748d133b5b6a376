"""`python -m iir_operator` as a process: peering on, liveness endpoint answering, models reconciled."""

from __future__ import annotations

import asyncio
import os
import sys

import httpx
import kmock

from iir_common.kube import PLURAL, Kube
from iir_dev.datastores import free_port
from iir_dev.stack import REPO
from tests.kube.conftest import gpu_node, inference_model
from tests.waiting import eventually


async def test_operator_process_serves_healthz_and_reconciles(apiserver: kmock.KubernetesEmulator, kube: Kube) -> None:
    apiserver.resources["kopf.dev/v1/clusterkopfpeerings"] = kmock.ResourceInfo(
        kind="ClusterKopfPeering", namespaced=False, verbs={"list", "watch", "get", "create", "patch"}
    )
    await kube._json(
        "POST",
        "/apis/kopf.dev/v1/clusterkopfpeerings",
        body={
            "apiVersion": "kopf.dev/v1",
            "kind": "ClusterKopfPeering",
            "metadata": {"name": "iir-operator", "resourceVersion": "1"},
        },
    )
    port = free_port()
    env = {**os.environ, "IIR_KUBE_SERVER": str(apiserver.url), "IIR_OPERATOR_HEALTH_PORT": str(port)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "iir_operator",
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient() as http:

            async def healthy() -> bool:
                try:
                    return (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(healthy, timeout=15)
            probe = (await http.get(f"http://127.0.0.1:{port}/healthz")).json()
            assert probe["reconciler"] is True
        await asyncio.sleep(1)  # the watch streams open just after the liveness endpoint
        await kube.create("nodes", None, gpu_node("gpu-a"))
        await kube.create(PLURAL, "ml", inference_model("proc", gpusPerReplica=1))
        await eventually(lambda: kube.get("deployments", "ml", "iir-proc"), timeout=10)
        peering = await kube._json("GET", "/apis/kopf.dev/v1/clusterkopfpeerings/iir-operator")
        assert peering.get("status"), "the operator announced itself in the peering object"
    finally:
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), 20)  # kmock keeps serving kopf's goodbye
    assert b"Traceback" not in err, err.decode()[err.find(b"Traceback") - 300 :][:3000]
