"""Rollouts and scale-downs fail no request: three replicas under continuous streaming and unary load;
one goes terminating, drains through its real preStop hook and stops while a new one joins; then the
operator's autoscaler scales the model down and a replica stops the same way. Zero failed requests and
zero truncated streams, with the gateway's own retries turned off so none is hidden."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import kmock
import openai

from iir_common.kube import PLURAL, Kube
from tests.conftest import SERVED
from tests.kube.conftest import inference_model, kube_stack, running_operator
from tests.kube.replicas import Replicas
from tests.waiting import eventually

NS = "ml"
MODEL = f"local/{SERVED}"


@dataclass
class Load:
    """Clients calling without pause until stopped: streams and unary requests, every outcome counted."""

    client: openai.AsyncOpenAI
    streams: int = 0
    unary: int = 0
    failures: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def stream_forever(self) -> None:
        while not self.stop.is_set():
            try:
                text, finish = "", None
                async for chunk in await self.client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "count"}], max_tokens=16, stream=True
                ):
                    if chunk.choices:
                        text += chunk.choices[0].delta.content or ""
                        finish = chunk.choices[0].finish_reason or finish
                if not text or finish is None:
                    self.failures.append(f"truncated stream: {text!r}, finish {finish}")
                self.streams += 1
            except Exception as exc:  # every failure is the finding
                self.failures.append(f"stream: {exc!r}")

    async def unary_forever(self) -> None:
        while not self.stop.is_set():
            try:
                reply = await self.client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=8
                )
                if not reply.choices[0].message.content:
                    self.failures.append("empty answer")
                self.unary += 1
            except Exception as exc:
                self.failures.append(f"unary: {exc!r}")

    async def progress(self, each: int) -> None:
        """Until `each` more streams and `each` more unary requests are through (or one failed)."""
        streams, unary = self.streams + each, self.unary + each
        await eventually(lambda: self.failures or (self.streams >= streams and self.unary >= unary), timeout=60)


async def test_rollout_and_autoscaler_scale_down_fail_no_request(
    tmp_path: Path, apiserver: kmock.KubernetesEmulator, kube: Kube, database_url: str, redis_url: str
) -> None:
    env = {"IIR_UPSTREAM_RETRIES": "0", "IIR_ENDPOINT_PICKER": "least_outstanding"}
    async with kube_stack(tmp_path, apiserver, database_url, redis_url, **env) as stack:
        key = await asyncio.to_thread(stack.create_key, "rollout")
        replicas = Replicas(kube, SERVED, tokens_per_s="40")  # a stream takes about 0.4 s
        try:
            async with running_operator(
                apiserver, registry_addr=f"127.0.0.1:{stack.ports.registry}", autoscale_interval_s=1
            ):
                await kube.create(PLURAL, NS, inference_model(SERVED, replicas=3))
                async with replicas.following_deployment():
                    await eventually(lambda: len(replicas.live) == 3, timeout=30)
                    client = openai.AsyncOpenAI(
                        base_url=f"{stack.gateway_url}/v1", api_key=key, max_retries=0, timeout=30
                    )
                    await eventually(lambda: _serves(client), timeout=10)
                    load = Load(client)
                    workers = [asyncio.create_task(load.stream_forever()) for _ in range(3)]
                    workers += [asyncio.create_task(load.unary_forever()) for _ in range(3)]
                    await load.progress(10)

                    # A rollout step: a new replica first (maxSurge 1); with one more than the Deployment
                    # asks for, the stand-in controller stops the oldest, which drains first.
                    first = replicas.live[0]
                    await replicas.add()
                    await eventually(lambda: replicas.drained == [first], timeout=30)
                    await load.progress(6)
                    during_rollout = load.streams + load.unary

                    # The autoscaler scales down (the load needs fewer than 3; at least 2 stay).
                    spec = {"minReplicas": 2, "maxReplicas": 3, "targetRequestsPerReplica": 100}
                    await kube.merge_patch(
                        PLURAL,
                        NS,
                        SERVED,
                        {"spec": {"replicas": 3, "autoscaling": {**spec, "scaleDownWindowSeconds": 0}}},
                    )
                    # The Deployment says 3 until the autoscaler writes 2; the stand-in controller then stops one.
                    await eventually(lambda: len(replicas.drained) == 2, timeout=30)
                    await load.progress(6)
                    load.stop.set()
                    await asyncio.gather(*workers)
                    await client.close()
                    im = await kube.get(PLURAL, NS, SERVED)
        finally:
            replicas.close()
    assert load.failures == [], load.failures[:5]
    assert during_rollout > 20 and load.streams > 20 and load.unary > 20
    assert min(replicas.drain_seconds) >= 3  # the hook waited for the change to spread, then for the requests
    assert im is not None and im["spec"]["replicas"] == 2
    assert "3 → 2 replicas" in im["status"]["autoscaling"]["message"]


async def _serves(client: openai.AsyncOpenAI) -> bool:
    return MODEL in [m.id async for m in client.models.list()]
