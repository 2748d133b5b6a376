"""Teams, users, spend in money, budgets and the key lifecycle, through the gateway app's admin API (moved
from tests/integration/test_governance.py; the CLI and a client leaving a stream stay there)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from iir_gateway.accounting.token_estimate import prompt_bound
from tests.conftest import MASTER_KEY, SERVED, SERVED_PRICE
from tests.gateway.conftest import Gateway
from tests.json_values import json_object
from tests.waiting import eventually

MODEL = f"local/{SERVED}"
ADMIN = {"Authorization": f"Bearer {MASTER_KEY}"}
OUTSIDE = "203.0.113.7"  # an address outside the trusted networks


async def admin(gateway: Gateway, method: str, path: str, **kw: Any) -> httpx.Response:
    return await gateway.client.request(method, path, headers=ADMIN, **kw)


def made(resp: httpx.Response, status: int = 201) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    return json_object(resp.json())


async def chat(gateway: Gateway, key: str, model: str = MODEL, **body: object) -> httpx.Response:
    payload = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **body}
    return await gateway.client.post("/v1/chat/completions", json=payload, headers={"Authorization": f"Bearer {key}"})


async def status_of(gateway: Gateway, key: str) -> int:
    return (await chat(gateway, key)).status_code


async def answers(gateway: Gateway, key: str, status: int) -> bool:
    return await status_of(gateway, key) == status


async def team(gateway: Gateway, **settings: object) -> dict[str, Any]:
    return made(
        await admin(gateway, "POST", "/api/v1/teams", json={"name": f"team-{uuid.uuid4().hex[:8]}", **settings})
    )


async def key(gateway: Gateway, **settings: object) -> dict[str, Any]:
    return made(await admin(gateway, "POST", "/api/v1/apikeys", json={"name": "gov", **settings}))


async def test_teams_and_users_are_managed_and_validated(gateway: Gateway) -> None:
    t = await team(gateway, max_budget=5, budget_duration="30d", rpm_limit=100, metadata={"cost_center": "42"})
    assert t["object"] == "team" and t["max_budget"] == 5 and t["metadata"] == {"cost_center": "42"}
    assert made(await admin(gateway, "GET", f"/api/v1/teams/{t['id']}"), 200)["name"] == t["name"]
    assert t["id"] in [x["id"] for x in made(await admin(gateway, "GET", "/api/v1/teams"), 200)["data"]]
    dup = await admin(gateway, "POST", "/api/v1/teams", json={"name": t["name"]})
    assert dup.status_code == 409 and dup.json()["error"]["code"] == "already_exists"
    for bad, param in (
        ({"name": "x", "budget_duration": "forever"}, "budget_duration"),
        ({"name": "x", "max_budget": -1}, "max_budget"),
        ({"name": "x", "colour": "red"}, "colour"),
        ({}, "name"),
    ):
        resp = await admin(gateway, "POST", "/api/v1/teams", json=bad)
        assert resp.status_code == 400 and resp.json()["error"]["param"] == param, resp.text
    changed = made(await admin(gateway, "PATCH", f"/api/v1/teams/{t['id']}", json={"max_budget": 7.5}), 200)
    assert changed["max_budget"] == 7.5 and changed["rpm_limit"] == 100
    assert (await admin(gateway, "GET", f"/api/v1/teams/{uuid.uuid4()}")).status_code == 404
    assert (await admin(gateway, "GET", "/api/v1/teams/not-a-uuid")).status_code == 404

    email = f"{uuid.uuid4().hex[:6]}@example.com"
    u = made(await admin(gateway, "POST", "/api/v1/users", json={"email": email, "team_ids": [t["id"]]}))
    assert u["id"] == email and u["team_ids"] == [t["id"]]
    assert made(await admin(gateway, "GET", f"/api/v1/teams/{t['id']}"), 200)["members"] == [email]
    missing = await admin(gateway, "POST", "/api/v1/users", json={"id": "nobody", "team_ids": [str(uuid.uuid4())]})
    assert missing.status_code == 400 and "no team" in missing.json()["error"]["message"]
    moved = made(await admin(gateway, "PATCH", f"/api/v1/users/{email}", json={"team_ids": []}), 200)
    assert moved["team_ids"] == []

    k = await key(gateway, team_id=t["id"], user_id=email)
    assert k["team_id"] == t["id"] and k["user_id"] == email
    orphan = await admin(gateway, "POST", "/api/v1/apikeys", json={"name": "x", "team_id": str(uuid.uuid4())})
    assert orphan.status_code == 400
    # A team or user with live keys stays; once the keys are revoked, they go.
    assert (await admin(gateway, "DELETE", f"/api/v1/teams/{t['id']}")).status_code == 409
    assert (await admin(gateway, "DELETE", f"/api/v1/users/{email}")).status_code == 409
    made(await admin(gateway, "DELETE", f"/api/v1/apikeys/{k['id']}"), 200)
    assert made(await admin(gateway, "DELETE", f"/api/v1/teams/{t['id']}"), 200)["deleted"] is True
    assert made(await admin(gateway, "DELETE", f"/api/v1/users/{email}"), 200)["deleted"] is True


async def test_a_key_is_bounded_by_its_teams_models_and_limits(gateway: Gateway) -> None:
    t = await team(gateway, allowed_models=[MODEL], rpm_limit=3)
    first, second = (await key(gateway, team_id=t["id"]))["key"], (await key(gateway, team_id=t["id"]))["key"]
    refused = await chat(gateway, first, model="local/slow")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"
    # The team's 3 requests a minute are shared by its keys.
    statuses = [await status_of(gateway, k) for k in (first, second, first, second)]
    assert statuses == [200, 200, 200, 429], statuses
    last = await chat(gateway, second)
    assert last.status_code == 429 and "team" in last.json()["error"]["message"]
    # Raising the team's limit applies at once on every gateway (the keys' cached copies are dropped).
    made(await admin(gateway, "PATCH", f"/api/v1/teams/{t['id']}", json={"rpm_limit": 1000}), 200)
    await eventually(lambda: answers(gateway, first, 200), timeout=5)


async def test_spend_in_money_is_recorded_and_grouped(gateway: Gateway) -> None:
    t = await team(gateway)
    email = f"{uuid.uuid4().hex[:6]}@example.com"
    made(await admin(gateway, "POST", "/api/v1/users", json={"email": email}))
    k = await key(gateway, team_id=t["id"], user_id=email, name=f"spender-{uuid.uuid4().hex[:4]}")
    answers = [await chat(gateway, k["key"], user="end-user-7", metadata={"feature": "search"}) for _ in range(3)]
    assert all(a.status_code == 200 for a in answers)
    usage = [a.json()["usage"] for a in answers]
    price = SERVED_PRICE
    expected = (
        sum(
            u["prompt_tokens"] * price["inputPerMillion"] + u["completion_tokens"] * price["outputPerMillion"]
            for u in usage
        )
        / 1e6
    )

    async def by(group: str) -> dict[str, dict[str, Any]]:
        resp = made(await admin(gateway, "GET", "/api/v1/spend", params={"group_by": group}), 200)
        return {row["group"]: row for row in resp["data"]}

    async def counted() -> bool:
        return bool((await by("team")).get(t["id"], {}).get("requests") == 3)

    await eventually(counted, timeout=10)
    row = (await by("team"))[t["id"]]
    assert row["name"] == t["name"] and row["requests"] == 3
    assert row["cost"] == pytest.approx(expected, rel=1e-6)
    assert (await by("user"))[email]["cost"] == pytest.approx(expected, rel=1e-6)
    assert (await by("key"))[k["id"]]["name"] == k["name"]
    assert MODEL in await by("model")
    assert time.strftime("%Y-%m-%d", time.gmtime()) in await by("day")
    csv = await admin(gateway, "GET", "/api/v1/spend", params={"group_by": "team", "format": "csv"})
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[0] == "group,name,cost,requests,prompt_tokens,completion_tokens"
    assert any(line.startswith(f"{t['id']},{t['name']},") for line in csv.text.splitlines())
    assert (await admin(gateway, "GET", "/api/v1/spend", params={"group_by": "planet"})).status_code == 400
    assert (await admin(gateway, "GET", "/api/v1/spend", params={"since": "yesterday"})).status_code == 400
    # The key sees its own spend, and nothing else's; a plain key may not read everyone's.
    own = await gateway.client.get("/api/v1/key/spend", headers={"Authorization": f"Bearer {k['key']}"})
    assert own.status_code == 200 and own.json()["total_cost"] == pytest.approx(expected, rel=1e-6)
    async with gateway.authorized(k["key"], client_ip=OUTSIDE) as outside:
        assert (await outside.get("/api/v1/spend")).status_code == 403


async def test_a_money_budget_refuses_with_its_reset_time(gateway: Gateway) -> None:
    usage = (await chat(gateway, (await key(gateway))["key"])).json()["usage"]
    price = SERVED_PRICE
    one_request = (usage["prompt_tokens"] * price["inputPerMillion"] + 4 * price["outputPerMillion"]) / 1e6
    # What admission reserves: the prompt's bound for text (its bytes and the template's tokens) and max_tokens.
    bound = prompt_bound({"messages": [{"role": "user", "content": "hi"}]})
    reserved = (bound * price["inputPerMillion"] + 4 * price["outputPerMillion"]) / 1e6
    made_key = await key(gateway, max_budget=reserved + one_request * 1.5, budget_duration="1d")
    k = made_key["key"]
    statuses = [await status_of(gateway, k) for _ in range(5)]
    # Admitted while the budget has room (reservations not yet settled may make that one fewer).
    assert statuses[0] == 200 and statuses.count(200) in (2, 3) and statuses[-1] == 429, statuses
    refused = await chat(gateway, k)
    err = refused.json()["error"]
    assert refused.status_code == 429 and err["code"] == "insufficient_quota" and "$" in err["message"]
    reset = int(refused.headers["x-ratelimit-reset-budget"])
    # Its day is counted from the key's creation, not from midnight.
    created = int(datetime.fromisoformat(made_key["created_at"]).timestamp())
    assert reset == created + 86400 and made_key["budget_reset_at"] == datetime.fromtimestamp(reset, UTC).isoformat()
    assert 0 < int(refused.headers["retry-after"]) <= 86400
    assert abs(reset - time.time() - int(refused.headers["retry-after"])) < 5


async def test_regenerate_keeps_the_old_secret_for_its_grace_period(gateway: Gateway) -> None:
    k = await key(gateway, rpm_limit=1000)
    new = made(await admin(gateway, "POST", f"/api/v1/apikeys/{k['id']}/regenerate", json={"grace_period_s": 2}))
    assert new["id"] == k["id"] and new["key"] != k["key"] and new["rpm_limit"] == 1000
    assert new["previous_secret_valid_until"] is not None
    assert await status_of(gateway, new["key"]) == 200
    assert await status_of(gateway, k["key"]) == 200  # in its grace period
    await eventually(lambda: answers(gateway, k["key"], 401), timeout=8)
    assert await status_of(gateway, new["key"]) == 200
    # Without a grace period (an empty body), the old secret stops at once.
    newer = made(await admin(gateway, "POST", f"/api/v1/apikeys/{k['id']}/regenerate"))
    await eventually(lambda: answers(gateway, new["key"], 401), timeout=2)
    assert await status_of(gateway, newer["key"]) == 200
    bad = await admin(gateway, "POST", f"/api/v1/apikeys/{k['id']}/regenerate", json={"grace_period_s": -1})
    assert bad.status_code == 400


async def test_block_and_unblock(gateway: Gateway) -> None:
    k = await key(gateway)
    assert await status_of(gateway, k["key"]) == 200
    assert made(await admin(gateway, "POST", f"/api/v1/apikeys/{k['id']}/block"), 200)["blocked"] is True
    await eventually(lambda: answers(gateway, k["key"], 401), timeout=2)
    assert "blocked" in (await chat(gateway, k["key"])).json()["error"]["message"]
    assert made(await admin(gateway, "POST", f"/api/v1/apikeys/{k['id']}/unblock"), 200)["blocked"] is False
    await eventually(lambda: answers(gateway, k["key"], 200), timeout=2)


async def test_max_parallel_requests_across_requests(gateway: Gateway) -> None:
    k = (await key(gateway, max_parallel_requests=1))["key"]
    body = {"model": "local/slow", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 6}
    headers = {"Authorization": f"Bearer {k}"}
    sends = [gateway.client.post("/v1/chat/completions", json=body, headers=headers) for _ in range(2)]
    assert sorted(r.status_code for r in await asyncio.gather(*sends)) == [200, 429]
    assert await status_of(gateway, k) == 200  # the slot was freed


async def test_admin_actions_are_audited(gateway: Gateway) -> None:
    k = await key(gateway)
    await admin(gateway, "PATCH", f"/api/v1/apikeys/{k['id']}", json={"rpm_limit": 7})
    await admin(gateway, "POST", f"/api/v1/apikeys/{k['id']}/block")
    entries = made(await admin(gateway, "GET", "/api/v1/audit", params={"target": f"key:{k['id']}"}), 200)["data"]
    assert [e["action"] for e in entries] == ["key.block", "key.update", "key.create"]
    update = entries[1]
    assert update["actor"] == "key:master" and update["before"]["rpm_limit"] == 0 and update["after"]["rpm_limit"] == 7
    assert "key_hash" not in str(entries) and k["key"] not in str(entries)
    assert (await admin(gateway, "GET", "/api/v1/audit", params={"limit": 0})).status_code == 400
    async with gateway.authorized(k["key"], client_ip=OUTSIDE) as outside:
        assert (await outside.get("/api/v1/audit")).status_code in (401, 403)


async def test_values_postgresql_cannot_store_are_refused_or_cleaned(gateway: Gateway) -> None:
    nul = await admin(gateway, "POST", "/api/v1/teams", json={"name": "nul", "metadata": {"k": "a\u0000b"}})
    assert nul.status_code == 400 and nul.json()["error"]["param"] == "metadata"
    k = (await key(gateway))["key"]
    # A request's `user` and `metadata` with NULs: its spend record is cleaned, and no batch is poisoned.
    assert (await chat(gateway, k, user="a\u0000b", metadata={"x\u0000": "y"})).status_code == 200
    assert await status_of(gateway, k) == 200

    async def requests() -> bool:
        own = await gateway.client.get("/api/v1/key/spend", headers={"Authorization": f"Bearer {k}"})
        return sum(int(row["requests"]) for row in own.json()["data"]) == 2

    await eventually(requests, timeout=10)


async def test_a_team_keys_job_runs_and_is_listed_for_the_admin(gateway: Gateway) -> None:
    t = await team(gateway, rpm_limit=100, max_budget=5)
    k = await key(gateway, team_id=t["id"])
    queued = await gateway.client.post(
        "/v1/async/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "later"}], "max_tokens": 4},
        headers={"Authorization": f"Bearer {k['key']}"},
    )
    assert queued.status_code == 202, queued.text
    job_id = queued.json()["job_id"]

    async def done() -> dict[str, Any] | None:
        work = made(await admin(gateway, "GET", f"/api/v1/apikeys/{k['id']}/jobs"), 200)
        job = next((j for j in work["jobs"] if j["job_id"] == job_id), None)
        return job if job and job["status"] == "completed" else None

    assert await eventually(done, timeout=15)  # run with the team's limits and budget, restored from the job
    assert (await admin(gateway, "GET", f"/api/v1/apikeys/{uuid.uuid4()}/jobs")).status_code == 404
