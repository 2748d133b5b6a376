"""LoRA adapters against the API emulator with the real operator: an InferenceAdapter is loaded into
every ready replica of its base model (simulated vLLM speaking vLLM's adapter API) without a restart,
its status says where, a replica that restarts gets it back, a deleted one is unloaded; the registry
lists it on the replicas that hold it, and the gateway serves it as `local/<adapter>`."""

from __future__ import annotations

import asyncio
import functools
import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import kmock
import openai
import pytest

from iir_common.kube import ADAPTER_PLURAL, GROUP, PLURAL, VERSION, Kube
from iir_dev import datastores
from tests.conftest import start_sim
from tests.kube.conftest import inference_model, kube_stack, pod
from tests.waiting import eventually

NS = "ml"
BASE = "base-llm"
HOSTS = ("127.0.0.1", "127.0.0.2")


def adapter(name: str, source: dict[str, Any], base: str = BASE, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceAdapter",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1, "resourceVersion": "1"},
        "spec": {"baseModel": base, "source": source, **spec},
    }


@pytest.fixture
def port() -> int:
    return datastores.free_port()


@pytest.fixture
def sims(port: int) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """Two replicas of the base model: simulated vLLM with LoRA (two slots) on the same port, two addresses."""
    procs = {h: start_sim(port, host=h, models=BASE, max_loras="2") for h in HOSTS}
    yield procs
    for proc in procs.values():
        proc.kill()
        proc.wait(10)


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    folder = tmp_path / "sql-lora"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"r": 8, "peft_type": "LORA"}))
    return folder


async def held(host: str, port: int) -> dict[str, str]:
    """What the replica lists under the base model: adapter → its path."""
    async with httpx.AsyncClient() as http:
        cards = (await http.get(f"http://{host}:{port}/v1/models")).json()["data"]
    return {c["id"]: c["root"] for c in cards if c["parent"] == BASE}


async def status(kube: Kube, name: str) -> dict[str, Any]:
    obj = await kube.get(ADAPTER_PLURAL, NS, name)
    return (obj or {}).get("status") or {}


async def replicas_ready(kube: Kube) -> None:
    for i, host in enumerate(HOSTS):
        await kube.create("pods", NS, pod(BASE, i, ip=host))


@pytest.fixture
async def base(kube: Kube, port: int, sims: dict[str, Any], operator: None) -> AsyncIterator[None]:
    await kube.create(PLURAL, NS, inference_model(BASE, lora={"maxLoras": 2, "maxLoraRank": 8}, vllm={"port": port}))
    await eventually(lambda: kube.get("deployments", NS, f"iir-{BASE}"))
    await replicas_ready(kube)
    yield


async def test_adapters_are_loaded_at_run_time_where_the_model_runs(
    kube: Kube, port: int, sims: dict[str, subprocess.Popen[bytes]], weights: Path, base: None
) -> None:
    dep = await kube.get("deployments", NS, f"iir-{BASE}")
    assert dep is not None
    container = dep["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert "--enable-lora" in args and args[args.index("--max-loras") + 1] == "2"
    assert args[args.index("--max-lora-rank") + 1] == "8"
    assert {"name": "VLLM_ALLOW_RUNTIME_LORA_UPDATING", "value": "True"} in container["env"]

    await kube.create(ADAPTER_PLURAL, NS, adapter("sql-lora", {"path": str(weights)}))
    got = await eventually(lambda: _phase(kube, "sql-lora", "Ready"), timeout=10)
    assert got["loadedOn"] == [f"iir-{BASE}-0", f"iir-{BASE}-1"] and got["readyReplicas"] == 2
    for host in HOSTS:
        assert await held(host, port) == {"sql-lora": str(weights)}
    dep_after = await kube.get("deployments", NS, f"iir-{BASE}")
    assert dep_after is not None and dep_after["metadata"].get("generation") == dep["metadata"].get("generation")

    # A replica restarts (runtime loads are forgotten) and becomes ready again: it gets the adapter back.
    sims[HOSTS[1]].kill()
    sims[HOSTS[1]].wait(10)
    sims[HOSTS[1]] = await asyncio.to_thread(start_sim, port, host=HOSTS[1], models=BASE, max_loras="2")
    assert await held(HOSTS[1], port) == {}
    await kube.merge_patch("pods", NS, f"iir-{BASE}-1", {"status": pod(BASE, 1, ip=HOSTS[1], ready=False)["status"]})
    await kube.merge_patch("pods", NS, f"iir-{BASE}-1", {"status": pod(BASE, 1, ip=HOSTS[1])["status"]})
    await eventually(lambda: _holds(HOSTS[1], port, "sql-lora"), timeout=10)

    await kube.delete(ADAPTER_PLURAL, NS, "sql-lora")
    for host in HOSTS:
        await eventually(functools.partial(_holds_nothing, host, port), timeout=10)


async def test_adapters_that_cannot_be_served_say_why(kube: Kube, port: int, base: None) -> None:
    await kube.create(ADAPTER_PLURAL, NS, adapter("missing", {"path": "/nowhere/at/all"}))
    failed = await eventually(lambda: _phase(kube, "missing", "Failed"), timeout=10)
    assert failed["reason"] == "LoadFailed" and "No adapter found" in failed["message"]  # vLLM's own words

    await kube.create(ADAPTER_PLURAL, NS, adapter("clash", {"huggingFace": {"id": "org/clash"}}, servedName=BASE))
    clash = await eventually(lambda: _phase(kube, "clash", "Failed"), timeout=10)
    assert clash["reason"] == "NotServable" and "taken" in clash["message"]

    await kube.create(PLURAL, "other-team", inference_model("their-model", namespace="other-team"))
    await kube.create(ADAPTER_PLURAL, NS, adapter("hijack", {"path": "/x"}, servedName="their-model"))
    hijack = await eventually(lambda: _phase(kube, "hijack", "Failed"), timeout=10)
    assert "is a model's" in hijack["message"]

    await kube.create(PLURAL, NS, inference_model("plain", vllm={"port": port}))
    await kube.create(ADAPTER_PLURAL, NS, adapter("orphan", {"huggingFace": {"id": "org/x"}}, base="plain"))
    orphan = await eventually(lambda: _phase(kube, "orphan", "Failed"), timeout=10)
    assert "no spec.lora" in orphan["message"]


async def test_a_pvc_adapter_is_mounted_on_the_base_replicas(kube: Kube, base: None) -> None:
    await kube.create(ADAPTER_PLURAL, NS, adapter("from-pvc", {"pvc": {"claimName": "loras", "path": "sql/v2"}}))

    async def mounted() -> bool:
        dep = await kube.get("deployments", NS, f"iir-{BASE}")
        spec = (dep or {}).get("spec", {}).get("template", {}).get("spec", {})
        mounts = spec.get("containers", [{}])[0].get("volumeMounts", [])
        claims = [v.get("persistentVolumeClaim", {}).get("claimName") for v in spec.get("volumes", [])]
        return "loras" in claims and any(m["mountPath"] == "/adapters/loras" for m in mounts)

    await eventually(mounted, timeout=10)


async def test_the_gateway_serves_an_adapter_on_the_replicas_that_hold_it(
    tmp_path: Path,
    apiserver: kmock.KubernetesEmulator,
    kube: Kube,
    port: int,
    weights: Path,
    database_url: str,
    redis_url: str,
    base: None,
) -> None:
    async with kube_stack(tmp_path / "stack", apiserver, database_url, redis_url) as stack:
        await kube.create(ADAPTER_PLURAL, NS, adapter("sql-lora", {"path": str(weights)}))
        await eventually(lambda: _phase(kube, "sql-lora", "Ready"), timeout=10)
        slice_ = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"iir-{BASE}-abc",
                "namespace": NS,
                "labels": {"kubernetes.io/service-name": f"iir-{BASE}", "iir.dev/model": BASE},
            },
            "ports": [{"name": "http", "port": port}],
            "endpoints": [
                {"addresses": [h], "conditions": {"ready": True}, "targetRef": {"name": f"iir-{BASE}-{i}"}}
                for i, h in enumerate(HOSTS)
            ],
        }
        await kube.create("endpointslices", NS, slice_)
        key = await asyncio.to_thread(stack.create_key, "lora")
        client = openai.AsyncOpenAI(base_url=f"{stack.gateway_url}/v1", api_key=key, max_retries=0)
        await eventually(lambda: _listed(client, "local/sql-lora"), timeout=10)
        for _ in range(4):
            reply = await client.chat.completions.create(
                model="local/sql-lora", messages=[{"role": "user", "content": "SELECT"}], max_tokens=4
            )
            assert reply.choices[0].message.content
        async with httpx.AsyncClient() as http:
            registry = (
                await http.get(
                    f"{stack.gateway_url}/v1/registry/status", headers={"Authorization": f"Bearer {stack.master_key}"}
                )
            ).json()
        entry = next(m for m in registry["models"] if m["name"] == "local/sql-lora")
        assert entry["ready_replicas"] == 2 and entry["served_name"] == "sql-lora"
        await client.close()


async def _phase(kube: Kube, name: str, phase: str) -> dict[str, Any] | None:
    got = await status(kube, name)
    return got if got.get("phase") == phase else None


async def _holds(host: str, port: int, name: str) -> bool:
    return name in await held(host, port)


async def _holds_nothing(host: str, port: int) -> bool:
    return await held(host, port) == {}


async def _listed(client: openai.AsyncOpenAI, model: str) -> bool:
    return model in [m.id async for m in client.models.list()]
