"""Scale to zero through the whole system: a request for a model at zero replicas is held by the gateway,
the demand reaches the operator through the registry at once, the operator scales the Deployment, and
the held request is answered by the first replica; with nobody to start one, a 503 with Retry-After."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import kmock
import openai

from iir_common.kube import PLURAL, Kube
from tests.conftest import SERVED
from tests.kube.conftest import inference_model, kube_stack, running_operator
from tests.kube.replicas import Replicas
from tests.waiting import eventually

NS = "ml"
MODEL = f"local/{SERVED}"
AT_ZERO = {"minReplicas": 0, "maxReplicas": 2, "scaleToZeroAfterSeconds": 600}


async def test_a_request_for_a_model_at_zero_waits_for_its_first_replica(
    tmp_path: Path, apiserver: kmock.KubernetesEmulator, kube: Kube, database_url: str, redis_url: str
) -> None:
    # The stack's gateway holds requests long enough for a replica to start on a busy machine; a second
    # gateway gives up after 3 s, for the case where nothing starts one.
    async with kube_stack(tmp_path, apiserver, database_url, redis_url, IIR_COLD_START_TIMEOUT_S="60") as stack:
        impatient = await asyncio.to_thread(
            stack.start_gateway_replica, "gateway-cold-3s", env={"IIR_COLD_START_TIMEOUT_S": "3"}
        )
        key = await asyncio.to_thread(stack.create_key, "cold")
        auth = {"Authorization": f"Bearer {key}"}
        await kube.create(PLURAL, NS, inference_model(SERVED, replicas=0, autoscaling=AT_ZERO))
        async with httpx.AsyncClient(base_url=impatient, headers=auth, timeout=30) as http:

            async def listed() -> bool:
                models = (await http.get("/v1/models")).json()["data"]
                return MODEL in [m["id"] for m in models]

            await eventually(listed)  # at zero, still listed: a request starts it

            # No operator: nothing starts a replica, so the held request times out.
            started = time.monotonic()
            body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
            refused = await http.post("/v1/chat/completions", json=body)
            assert time.monotonic() - started > 2.5  # held for the timeout, not refused at once
            assert refused.status_code == 503 and refused.headers["retry-after"] == "30"
            error = refused.json()["error"]
            assert error["code"] == "model_cold_start_timeout" and MODEL in error["message"]

            replicas = Replicas(kube, SERVED, tokens_per_s="200")
            try:
                async with (
                    running_operator(apiserver, registry_addr=f"127.0.0.1:{stack.ports.registry}"),
                    replicas.following_deployment(),
                ):
                    client = openai.AsyncOpenAI(
                        base_url=f"{stack.gateway_url}/v1", api_key=key, max_retries=0, timeout=90
                    )
                    await eventually(lambda: _phase(kube, "ScaledToZero"))
                    replies = await asyncio.gather(
                        *(
                            client.chat.completions.create(
                                model=MODEL, messages=[{"role": "user", "content": f"hi {i}"}], max_tokens=5
                            )
                            for i in range(3)
                        )
                    )
                    assert all(r.choices[0].message.content for r in replies)  # held, not refused
                    assert len(replicas.live) == 1
                    im = await kube.get(PLURAL, NS, SERVED)
                    assert im is not None and im["spec"]["replicas"] == 1
                    assert "held" in im["status"]["autoscaling"]["message"]
                    await client.close()
            finally:
                replicas.close()
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(stack.metrics_url)).text
        line = next(x for x in metrics.splitlines() if x.startswith("iir_gateway_cold_start_seconds_count"))
        assert MODEL in line and float(line.split()[-1]) == 1.0


async def _phase(kube: Kube, phase: str) -> bool:
    im = await kube.get(PLURAL, NS, SERVED)
    return ((im or {}).get("status") or {}).get("phase") == phase
