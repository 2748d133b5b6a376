"""Two gateway processes sharing one auth service and one Redis, and a model (`slow`) that decodes 20 tokens
a second: what one gateway admits, the other must see."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from iir_dev import datastores
from iir_dev.stack import Stack
from tests.conftest import MASTER_KEY, make_stack, start_sim
from tests.json_values import json_object


class Pair:
    """The stack (gateway A, no job workers) and gateway B (job workers)."""

    def __init__(self, stack: Stack, b: str) -> None:
        self.stack = stack
        self.a = stack.gateway_url
        self.b = b

    def key(self, **settings: Any) -> dict[str, Any]:
        resp = httpx.post(
            f"{self.a}/api/v1/apikeys",
            json={"name": "limits", **settings},
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
        )
        assert resp.status_code == 201, resp.text
        return json_object(resp.json())

    def admin(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(method, f"{self.a}{path}", headers={"Authorization": f"Bearer {MASTER_KEY}"}, **kw)


@pytest.fixture(scope="session")
def pair(tmp_path_factory: pytest.TempPathFactory, database_url: str, redis_url: str) -> Iterator[Pair]:
    port = datastores.free_port()
    sim = start_sim(port, models="llama-3-8b-instruct,slow", tokens_per_s="20")
    stack = make_stack(
        Path(tmp_path_factory.mktemp("pair")),
        database_url,
        redis_url,
        f"http://127.0.0.1:{port}",
        IIR_JOB_WORKERS="0",
        IIR_JOB_CLAIM_IDLE_S="2",
        IIR_JOB_MAX_QUEUED_PER_KEY="5",
    )
    b = stack.start_gateway_replica("gateway-b", env={"IIR_JOB_WORKERS": "4"})
    yield Pair(stack, b)
    stack.stop()
    sim.terminate()
    sim.wait(10)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def stream_usage(client: httpx.AsyncClient, url: str, key: str, body: dict[str, Any]) -> tuple[int, int]:
    """(status, total tokens the stream reported) of one streamed chat completion."""
    async with client.stream(
        "POST",
        f"{url}/v1/chat/completions",
        headers=bearer(key),
        json={**body, "stream": True, "stream_options": {"include_usage": True}},
    ) as resp:
        if resp.status_code != 200:
            await resp.aread()
            return resp.status_code, 0
        total = 0
        async for line in resp.aiter_lines():
            if line.startswith("data: {") and '"usage":{' in line:
                import orjson

                total = orjson.loads(line[6:])["usage"]["total_tokens"]
        return 200, total


def run(coro: Any) -> Any:
    return asyncio.run(coro)
