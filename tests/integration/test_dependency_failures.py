"""A stack of its own whose services are stopped one by one: the gateway degrades, never crashes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from iir_dev.stack import Stack
from tests.conftest import SERVED, make_stack

BODY = {"model": f"local/{SERVED}", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def fragile(
    tmp_path_factory: pytest.TempPathFactory, database_url: str, redis_url: str, slow_sim: str
) -> Iterator[Stack]:
    stack = make_stack(Path(tmp_path_factory.mktemp("fragile")), database_url, redis_url, slow_sim)
    yield stack
    stack.stop()


def stop(stack: Stack, name: str) -> None:
    proc = stack.processes[name].popen
    proc.terminate()
    proc.wait(10)


def test_gateway_degrades_as_dependencies_stop(fragile: Stack) -> None:
    url = fragile.gateway_url
    cached_key = fragile.create_key("cached")
    new_key = fragile.create_key("never-used")
    chat = f"{url}/v1/chat/completions"
    assert httpx.post(chat, json=BODY, headers={"Authorization": f"Bearer {cached_key}"}).status_code == 200

    stop(fragile, "classifier")  # optional: health says degraded, still 200
    report = httpx.get(f"{url}/health").json()
    assert report["status"] == "degraded" and report["dependencies"]["classifier"]["status"] != "ok"
    assert httpx.get(f"{url}/health").status_code == 200

    stop(fragile, "auth")
    resp = httpx.post(chat, json=BODY, headers={"Authorization": f"Bearer {new_key}"})
    assert resp.status_code == 503 and resp.json()["error"]["code"] == "auth_unavailable"
    # A key validated before is served from the gateway's cache: no round trip on the hot path.
    assert httpx.post(chat, json=BODY, headers={"Authorization": f"Bearer {cached_key}"}).status_code == 200
    assert httpx.get(f"{url}/health").status_code == 503
    # Readiness is whether this pod can serve: with keys cached it can, so it stays in the Service.
    assert httpx.get(f"{url}/health/ready").status_code == 200
    # A gateway that has cached no key cannot check any while auth is away: not ready.
    lonely = fragile.start_gateway_replica("lonely-gateway")
    ready = httpx.get(f"{lonely}/health/ready")
    assert ready.status_code == 503 and ready.json()["cached_keys"] == 0

    stop(fragile, "registry")
    # The last catalogue keeps serving while the registry is away.
    assert httpx.post(chat, json=BODY, headers={"Authorization": f"Bearer {cached_key}"}).status_code == 200
    report = httpx.get(f"{url}/health").json()
    assert report["status"] == "unavailable" and report["dependencies"]["registry"]["watch"] == "disconnected"
    resp = httpx.get(f"{url}/v1/registry/status", headers={"Authorization": f"Bearer {cached_key}"})
    assert resp.status_code == 503 and resp.json()["error"]["code"] == "registry_unavailable"
    ready = httpx.get(f"{url}/health/ready")  # a stale catalogue still serves
    assert ready.status_code == 200 and ready.json()["catalogue"] == "stale"
