"""kubectl apply → operator → pods ready → registry Watch → gateway lists and serves the model; delete → 404.

The API server is the kmock emulator in this test's event loop; registry, auth, classifier, gateway and
the simulated vLLM are real processes. Pods and EndpointSlices are written by the test, standing in for
the kubelet and the endpoint controller that an emulator does not have.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest

from iir_common.kube import PLURAL, Kube
from iir_dev.stack import Stack
from tests.conftest import MASTER_KEY, SERVED
from tests.kube.conftest import gpu_node, inference_model, kube_stack, pod
from tests.waiting import eventually

NS = "ml"


@pytest.fixture
async def stack(tmp_path: Path, apiserver, database_url: str, redis_url: str) -> AsyncIterator[Stack]:  # type: ignore[no-untyped-def]
    async with kube_stack(tmp_path, apiserver, database_url, redis_url) as running:
        yield running


async def test_applied_model_is_listed_and_served(kube: Kube, operator: None, stack: Stack) -> None:
    sim_port = stack.ports.sim
    key = await asyncio.to_thread(stack.create_key, "e2e")
    client = openai.AsyncOpenAI(base_url=f"{stack.gateway_url}/v1", api_key=key, max_retries=0)
    model = f"local/{SERVED}"

    await kube.create("nodes", None, gpu_node("gpu-a"))
    await kube.create(PLURAL, NS, inference_model(SERVED, gpusPerReplica=1, vllm={"port": sim_port}))
    await eventually(lambda: kube.get("deployments", NS, f"iir-{SERVED}"))
    assert model not in [m.id async for m in client.models.list()]  # no replica is ready yet

    await kube.create("pods", NS, pod(SERVED, 0, ip="127.0.0.1"))  # the kubelet reports the pod ready
    await eventually(lambda: _listed(client, model), timeout=5)
    reply = await client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content
    chunks = [
        c
        async for c in await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], stream=True
        )
    ]
    assert chunks and chunks[-1].choices[0].finish_reason

    async with httpx.AsyncClient() as http:
        status = (
            await http.get(f"{stack.gateway_url}/v1/registry/status", headers={"Authorization": f"Bearer {MASTER_KEY}"})
        ).json()
    entry = next(m for m in status["models"] if m["name"] == model)
    assert entry["phase"] == "Ready" and entry["source"] == "kubernetes" and entry["ready_replicas"] == 1
    assert status["nodes"][0]["name"] == "gpu-a" and status["nodes"][0]["free"] == 7

    await kube.delete(PLURAL, NS, SERVED)
    await eventually(lambda: _not_listed(client, model), timeout=1.0)
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    await client.close()


async def _listed(client: openai.AsyncOpenAI, model: str) -> bool:
    return model in [m.id async for m in client.models.list()]


async def _not_listed(client: openai.AsyncOpenAI, model: str) -> bool:
    return not await _listed(client, model)
