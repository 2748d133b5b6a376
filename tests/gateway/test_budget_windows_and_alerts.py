"""Budget windows counted from the creation of the key or team, and budget alerts sent once per window and
threshold to the operator's webhook (a receiver in this process), over two gateway replicas."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import grpc
import httpx
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from iir.v1 import auth_pb2, auth_pb2_grpc
from iir_common.budget_window import add_months
from iir_dev.datastores import free_port
from iir_gateway.accounting.admission import BudgetAsk
from iir_gateway.accounting.alert_webhook import AlertWebhook
from iir_gateway.accounting.budget_alerts import Alert
from iir_gateway.accounting.rate_limiter import RateLimiter
from iir_gateway.accounting.token_estimate import prompt_bound
from iir_gateway.metrics import GatewayMetrics
from iir_gateway.principal import Principal
from tests.conftest import MASTER_KEY, SERVED, SERVED_PRICE
from tests.gateway.conftest import Fleet, Gateway, running_gateway
from tests.gateway.servers import serve_aiohttp
from tests.json_values import json_object
from tests.waiting import eventually

MODEL = f"local/{SERVED}"
ADMIN = {"Authorization": f"Bearer {MASTER_KEY}"}
WEEK = 7 * 86400
HI = [{"role": "user", "content": "hi"}]
MAX_TOKENS = 20  # with `ignore_eos`, every answer of the simulated vLLM has exactly this many tokens


def iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


async def admin(gateway: Gateway, method: str, path: str, **kw: Any) -> httpx.Response:
    return await gateway.client.request(method, path, headers=ADMIN, **kw)


def made(resp: httpx.Response, status: int = 201) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    return json_object(resp.json())


async def chat(gateway: Gateway, key: str) -> httpx.Response:
    body = {"model": MODEL, "messages": HI, "max_tokens": MAX_TOKENS, "ignore_eos": True}
    return await gateway.client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})


def counted(gateway: Gateway, outcome: str) -> float:
    """`iir_gateway_budget_alerts_total{outcome}` of this gateway."""
    found = re.search(rf'^iir_gateway_budget_alerts_total{{outcome="{outcome}"}} (\S+)$', gateway.metrics(), re.M)
    return float(found.group(1)) if found else 0.0


async def record_spend(fleet: Fleet, key_id: str, *spends: tuple[float, float]) -> None:
    """Spend records of `key_id` in the auth service's log: (Unix seconds, USD) each."""
    records = [
        auth_pb2.SpendRecord(
            at_ms=int(at * 1000), key_id=key_id, model=MODEL, cost=usd, status=200, record_id=uuid.uuid4().hex
        )
        for at, usd in spends
    ]
    async with grpc.aio.insecure_channel(fleet.auth_addr) as channel:
        await auth_pb2_grpc.AuthServiceStub(channel).RecordSpend(auth_pb2.RecordSpendRequest(records=records))


# Windows


async def test_a_budget_window_starts_at_its_keys_creation(gateway: Gateway, fleet: Fleet, database_url: str) -> None:
    made_key = await admin(gateway, "POST", "/api/v1/apikeys", json={"max_budget": 1, "budget_duration": "7d"})
    k = made(made_key)
    # The key's week began a day before the epoch's week (which starts on a Thursday): it was made a week
    # and a day before that. Spend before its week is not counted; spend since is, though the epoch's
    # week began after it.
    start = int(time.time()) // WEEK * WEEK - 86400
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "UPDATE api_keys SET created_at = to_timestamp($2) WHERE id = $1", uuid.UUID(k["id"]), start - WEEK
        )
    finally:
        await conn.close()
    await record_spend(fleet, k["id"], (start - 3600, 0.9), (start + 3600, 0.999))

    refused = await chat(gateway, k["key"])  # the counter is rebuilt from the log since the window's start
    assert refused.status_code == 429, refused.text
    assert "$0.001 left of $1" in refused.json()["error"]["message"]
    assert int(refused.headers["x-ratelimit-reset-budget"]) == start + WEEK
    redis = aioredis.from_url(fleet.redis_url)
    try:
        assert int(await redis.get(f"{fleet.redis_prefix}spend:key:{k['id']}:7d@{start}") or 0) == 999_000_000
    finally:
        await redis.aclose()
    shown = made(await admin(gateway, "GET", f"/api/v1/apikeys/{k['id']}"), 200)
    assert shown["created_at"] == iso(start - WEEK) and shown["budget_reset_at"] == iso(start + WEEK)


class History:
    """The spend log as a budget rebuild asks it: records each question, answers `spent` nano-USD."""

    def __init__(self, spent: int) -> None:
        self.spent = spent
        self.asked: list[tuple[str, str, int]] = []

    async def spent_since(self, scope_kind: str, scope_id: str, since_s: int) -> tuple[int, int]:
        self.asked.append((scope_kind, scope_id, since_s))
        return self.spent, 0


async def test_a_window_rolls_over_at_the_hour_of_the_creation(fleet: Fleet) -> None:
    monday = int(datetime(2026, 12, 7, 10, tzinfo=UTC).timestamp())
    now = [monday + 3600.0]
    history = History(250_000_000)
    redis = aioredis.from_url(fleet.redis_url)
    prefix = f"{fleet.redis_prefix}clock-{uuid.uuid4().hex[:6]}:"
    limiter = RateLimiter(redis, GatewayMetrics(), prefix, history=history, clock=lambda: now[0])
    p = Principal(
        f"k-{uuid.uuid4().hex[:8]}", "clocked", False, 0, (), max_budget=1, budget_duration="7d", created_at=monday
    )
    ask = BudgetAsk(10, 1_000_000, 4, 200_000.0)  # $0.001 of prompt, $0.0002 a completion token

    async def spend(at: float, cost: int) -> None:
        now[0] = at
        await limiter.settle(p, await limiter.admit(p, 0, ask=ask), 0, cost)

    async def counter(start: int) -> int:
        return int(await redis.get(f"{prefix}spend:key:{p.key_id}:7d@{start}") or -1)

    try:
        await spend(monday + 3600, 1_000_000)
        assert history.asked == [("key", p.key_id, monday)]  # seeded from the spend log since its creation
        thursday = datetime(2026, 12, 10, tzinfo=UTC).timestamp()  # where the epoch's weeks start
        await spend(thursday + 1, 2_000_000)
        await spend(monday + WEEK - 1, 3_000_000)
        assert len(history.asked) == 1 and await counter(monday) == 256_000_000
        await spend(monday + WEEK, 4_000_000)  # the next Monday at 10:00: a new window, rebuilt from its start
        assert history.asked[-1] == ("key", p.key_id, monday + WEEK)
        assert await counter(monday + WEEK) == 254_000_000
    finally:
        await redis.aclose()


# Alert thresholds through the admin API


async def test_alert_thresholds_are_kept_shown_and_checked(gateway: Gateway, fleet: Fleet) -> None:
    name = f"alerts-{uuid.uuid4().hex[:8]}"
    settings = {"name": name, "max_budget": 100, "budget_duration": "1mo", "budget_alert_thresholds": [80, 50, 100, 50]}
    team = made(await admin(gateway, "POST", "/api/v1/teams", json=settings))
    assert team["budget_alert_thresholds"] == [50, 80, 100]  # each once, in order
    created = datetime.fromisoformat(team["created_at"])
    assert team["budget_reset_at"] == add_months(created, 1).isoformat()
    path = f"/api/v1/teams/{team['id']}"
    assert made(await admin(gateway, "PATCH", path, json={"budget_alert_thresholds": [90]}), 200)[
        "budget_alert_thresholds"
    ] == [90]
    kept = made(await admin(gateway, "PATCH", path, json={"max_budget": 5}), 200)
    assert kept["budget_alert_thresholds"] == [90] and kept["max_budget"] == 5
    assert (
        made(await admin(gateway, "PATCH", path, json={"budget_alert_thresholds": []}), 200)["budget_alert_thresholds"]
        == []
    )

    k = made(await admin(gateway, "POST", "/api/v1/apikeys", json={"name": "a", "budget_alert_thresholds": [75.5]}))
    assert k["budget_alert_thresholds"] == [75.5] and k["budget_reset_at"] is None
    keys = f"/api/v1/apikeys/{k['id']}"
    assert made(await admin(gateway, "PATCH", keys, json={"budget_alert_thresholds": [20, 10]}), 200)[
        "budget_alert_thresholds"
    ] == [10, 20]
    assert made(await admin(gateway, "PATCH", keys, json={"rpm_limit": 5}), 200)["budget_alert_thresholds"] == [10, 20]
    assert made(await admin(gateway, "GET", keys), 200)["budget_alert_thresholds"] == [10, 20]

    for bad in ([0], [100.5], [-5], list(range(1, 12)), ["x"]):
        for method, where in (("POST", "/api/v1/apikeys"), ("PATCH", keys), ("PATCH", path)):
            resp = await admin(gateway, method, where, json={"budget_alert_thresholds": bad})
            assert resp.status_code == 400, (bad, where, resp.text)
            assert resp.json()["error"]["param"].startswith("budget_alert_thresholds"), resp.text
    # The auth service checks them too, for any other client of its API.
    async with grpc.aio.insecure_channel(fleet.auth_addr) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await auth_pb2_grpc.AuthServiceStub(channel).CreateKey(
                auth_pb2.CreateKeyRequest(name="x", budget_alert_thresholds=[150])
            )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# Alerts


@dataclass
class Receiver:
    """A webhook receiver: answers 500 to its first `failures` tries, then keeps each body; with `stuck`,
    holds every request until released."""

    failures: int = 0
    stuck: bool = False
    tries: int = 0
    alerts: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.tries += 1
        if self.stuck:
            await self.release.wait()
        if self.tries <= self.failures:
            return web.Response(status=500)
        self.alerts.append(await request.json())
        return web.json_response({"ok": True})


@contextlib.asynccontextmanager
async def receiving(receiver: Receiver) -> AsyncIterator[Receiver]:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    async with serve_aiohttp(app) as base:
        receiver.url = f"{base}/hook"
        try:
            yield receiver
        finally:
            receiver.release.set()


def alerting(fleet: Fleet, url: str) -> Any:
    return fleet.settings(
        budget_alert_webhook_url=url, budget_alert_backoff_s=0.05, budget_alert_retries=3, budget_alert_timeout_s=2
    )


async def test_each_threshold_is_sent_once_per_window_over_two_replicas(gateway: Gateway, fleet: Fleet) -> None:
    # The team's budget is what one request reserves: its answer spends more than half of it, and what is
    # left then cannot pay for the next one's prompt.
    probe = made(await admin(gateway, "POST", "/api/v1/apikeys", json={"name": "probe"}))
    prompt = (await chat(gateway, probe["key"])).json()["usage"]["prompt_tokens"]
    per_token = {"in": SERVED_PRICE["inputPerMillion"] / 1e6, "out": SERVED_PRICE["outputPerMillion"] / 1e6}
    budget = prompt_bound({"messages": HI}) * per_token["in"] + MAX_TOKENS * per_token["out"]
    cost = prompt * per_token["in"] + MAX_TOKENS * per_token["out"]
    assert 0.5 * budget <= cost < budget
    team = made(
        await admin(
            gateway,
            "POST",
            "/api/v1/teams",
            json={
                "name": f"alerted-{uuid.uuid4().hex[:8]}",
                "max_budget": budget,
                "budget_duration": "1d",
                "budget_alert_thresholds": [50, 100],
            },
        )
    )
    k = made(await admin(gateway, "POST", "/api/v1/apikeys", json={"name": "alerted", "team_id": team["id"]}))["key"]

    async with (
        receiving(Receiver(failures=2)) as hook,
        running_gateway(alerting(fleet, hook.url)) as one,
        running_gateway(alerting(fleet, hook.url)) as two,
    ):
        assert (await chat(one, k)).status_code == 200
        await eventually(lambda: len(hook.alerts) == 1, timeout=10)  # after two failed tries
        assert hook.tries == 3 and counted(one, "sent") == 1
        refused = await chat(two, k)  # the other replica: what is left pays not even the prompt
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "insufficient_quota"
        await eventually(lambda: len(hook.alerts) == 2 and counted(two, "already_sent") == 1, timeout=10)
        # Past both thresholds again, on either replica: nothing is sent again in this window.
        assert (await chat(one, k)).status_code == 429 and (await chat(two, k)).status_code == 429
        await eventually(lambda: counted(one, "already_sent") == 1, timeout=10)  # it claimed the 100% too late

    half, full = hook.alerts
    start = int(datetime.fromisoformat(team["created_at"]).timestamp())
    assert half["scope"] == full["scope"] == {"kind": "team", "id": team["id"], "name": team["name"]}
    assert (half["threshold"], half["exhausted"], full["threshold"], full["exhausted"]) == (50, False, 100, True)
    assert half["spent"] == pytest.approx(cost) and full["spent"] == pytest.approx(cost)
    assert half["budget"] == pytest.approx(budget) and half["currency"] == "USD" and half["budget_duration"] == "1d"
    window = {"start": iso(start).replace("+00:00", "Z"), "end": iso(start + 86400).replace("+00:00", "Z")}
    assert half["window"] == full["window"] == window
    assert half["id"] == f"team:{team['id']}:1d@{start}:50" and "team " + team["name"] in half["text"]
    assert counted(one, "sent") + counted(two, "sent") == 2 and hook.tries == 4


async def test_a_receiver_down_or_stuck_leaves_the_requests_alone(gateway: Gateway, fleet: Fleet) -> None:
    funded = {"name": "funded", "max_budget": 100, "budget_duration": "30d", "budget_alert_thresholds": [1e-6]}
    down = made(await admin(gateway, "POST", "/api/v1/apikeys", json=funded))["key"]
    async with running_gateway(alerting(fleet, f"http://127.0.0.1:{free_port()}/hook")) as gw:
        answers = [await chat(gw, down) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 200]
        await eventually(lambda: counted(gw, "failed") == 1, timeout=10)  # every try failed, once

    stuck = made(await admin(gateway, "POST", "/api/v1/apikeys", json=funded))["key"]
    async with receiving(Receiver(stuck=True)) as hook, running_gateway(alerting(fleet, hook.url)) as gw:
        assert (await chat(gw, stuck)).status_code == 200
        await eventually(lambda: hook.tries == 1, timeout=10)  # held by the receiver
        assert [(await chat(gw, stuck)).status_code for _ in range(3)] == [200, 200, 200]
        assert hook.tries == 1 and not hook.alerts


async def test_a_refused_alert_is_not_tried_again() -> None:
    metrics = GatewayMetrics()

    async def refusing(request: web.Request) -> web.Response:
        tries.append(await request.json())
        return web.Response(status=400)

    tries: list[dict[str, Any]] = []
    app = web.Application()
    app.router.add_post("/hook", refusing)
    async with serve_aiohttp(app) as base:
        webhook = AlertWebhook(f"{base}/hook", metrics, "slack", timeout_s=2, retries=3, backoff_s=0.01)
        alert = Alert("key:k:all:80", "key", "k", "ci", 80, 8, 10, "", 0, None, False, time.time())
        try:
            await webhook.send(alert)
        finally:
            await webhook.close()
    assert len(tries) == 1 and list(tries[0]) == ["text"]
    assert metrics.registry.get_sample_value("iir_gateway_budget_alerts_total", {"outcome": "failed"}) == 1
