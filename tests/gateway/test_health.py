"""Health, readiness and liveness: the summary for anyone, each dependency's state for an admin, and what
becomes of them when the auth service is away."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest_asyncio

from iir_dev.datastores import free_port
from iir_gateway.settings import GatewaySettings
from tests.conftest import MASTER_KEY, SERVED, STATIC_KEY
from tests.gateway.conftest import Fleet, Gateway, running_gateway
from tests.gateway.servers import auth_server


def without_workers(fleet: Fleet, auth_addr: str) -> GatewaySettings:
    """A short-lived gateway's settings: no job or batch workers, whose stop can hang when it comes
    within moments of their start (a cancelled first Redis command)."""
    return fleet.settings(auth_addr=auth_addr, grpc_timeout_s=0.5, job_workers=0, batch_concurrency=0)


ADMIN = {"Authorization": f"Bearer {MASTER_KEY}"}
MESSAGES = [{"role": "user", "content": "hi"}]


async def test_liveness_answers_without_a_key(gateway: Gateway) -> None:
    for path in ("/health/live", "/healthz"):
        resp = await gateway.client.get(path)
        assert resp.status_code == 200 and resp.json() == {"status": "ok"}
    assert (await gateway.client.get("/version")).json()["name"] == "iir-gateway"


async def test_health_details_are_for_admins(gateway: Gateway, api_key: str) -> None:
    plain = (await gateway.client.get("/health", headers={"Authorization": f"Bearer {api_key}"})).json()
    assert "dependencies" not in plain and plain["status"] == "ok"
    # The task API's seed fields, beside IIR's: the key sees the default model and what it may call.
    assert plain["redis_connected"] is True and plain["model_loaded"] is True and plain["version"]
    assert plain["model"] and plain["backend"] and plain["model"] in plain["available_models"]
    report = (await gateway.client.get("/health", headers=ADMIN)).json()
    assert report["status"] == "ok" and report["version"]
    deps = report["dependencies"]
    assert {name: deps[name]["status"] for name in ("auth", "registry", "classifier", "redis")} == dict.fromkeys(
        ("auth", "registry", "classifier", "redis"), "ok"
    )
    assert deps["registry"]["watch"] == "connected" and deps["registry"]["models"] == 7


async def test_ready_once_keys_can_be_checked_and_a_catalogue_arrived(gateway: Gateway, api_key: str) -> None:
    plain = await gateway.client.get("/health/ready", headers={"Authorization": f"Bearer {api_key}"})
    assert plain.status_code == 200 and plain.json() == {"status": "ready"}
    report = (await gateway.client.get("/health/ready", headers=ADMIN)).json()
    assert report["status"] == "ready" and report["auth"] == "ok" and report["catalogue"] == "live"


async def test_without_auth_from_the_start_the_gateway_is_neither_healthy_nor_ready(fleet: Fleet) -> None:
    async with running_gateway(without_workers(fleet, auth_addr=f"127.0.0.1:{free_port()}")) as gw:
        health = await gw.client.get("/health")  # key-less admin: the test client is on loopback
        assert health.status_code == 503 and health.json()["status"] == "unavailable"
        assert health.json()["dependencies"]["auth"]["status"].startswith("unavailable")
        ready = await gw.client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["status"] == "not ready" and ready.json()["auth"] == "unavailable, no cached keys"
        resp = await gw.client.post(
            "/v1/chat/completions",
            json={"model": f"local/{SERVED}", "messages": MESSAGES},
            headers={"Authorization": f"Bearer {STATIC_KEY}"},
        )
        assert resp.status_code == 503 and resp.json()["error"]["message"]


@pytest_asyncio.fixture(loop_scope="session")
async def own_auth(fleet: Fleet, database_url: str) -> AsyncIterator[tuple[str, contextlib.AsyncExitStack]]:
    """An auth server of its own (same database and Redis), which the test may stop."""
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(
            auth_server(database_url, fleet.redis_url, fleet.redis_prefix, MASTER_KEY, STATIC_KEY)
        )
        yield f"127.0.0.1:{server.port}", stack


async def test_when_auth_goes_away_cached_keys_keep_the_gateway_ready(
    fleet: Fleet, own_auth: tuple[str, contextlib.AsyncExitStack], api_key: str
) -> None:
    address, auth = own_auth
    async with running_gateway(without_workers(fleet, auth_addr=address)) as gw:
        headers = {"Authorization": f"Bearer {api_key}"}
        body = {"model": f"local/{SERVED}", "messages": MESSAGES, "max_tokens": 2}
        assert (await gw.client.post("/v1/chat/completions", json=body, headers=headers)).status_code == 200
        await auth.aclose()  # the auth server stops
        health = await gw.client.get("/health")
        assert health.status_code == 503 and health.json()["dependencies"]["auth"]["status"].startswith("unavailable")
        ready = await gw.client.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["cached_keys"] >= 1
        # The key validated before is served from the cache (IIR_KEY_STALE_TTL_S); an unknown one is refused.
        assert (await gw.client.post("/v1/chat/completions", json=body, headers=headers)).status_code == 200
        other = await gw.client.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer iir-nope"})
        assert other.status_code in (401, 503) and other.json()["error"]["message"]
