"""Teams, users, spend in money, budgets and the key lifecycle, through the gateway's admin API."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx
import pytest

from iir_dev.stack import REPO, Stack
from iir_gateway.accounting.token_estimate import prompt_bound
from tests.conftest import MASTER_KEY, SERVED, SERVED_PRICE
from tests.json_values import json_object
from tests.waiting import wait_for

MODEL = f"local/{SERVED}"
ADMIN = {"Authorization": f"Bearer {MASTER_KEY}"}


def admin(stack: Stack, method: str, path: str, **kw: object) -> httpx.Response:
    return httpx.request(method, f"{stack.gateway_url}{path}", headers=ADMIN, timeout=20, **kw)  # type: ignore[arg-type]


def made(resp: httpx.Response, status: int = 201) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    return json_object(resp.json())


def chat(stack: Stack, key: str, model: str = MODEL, **body: object) -> httpx.Response:
    payload = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **body}
    return httpx.post(
        f"{stack.gateway_url}/v1/chat/completions",
        json=payload,
        headers={"Authorization": f"Bearer {key}"},
        timeout=20,
    )


def team(stack: Stack, **settings: object) -> dict[str, Any]:
    return made(admin(stack, "POST", "/api/v1/teams", json={"name": f"team-{uuid.uuid4().hex[:8]}", **settings}))


def key(stack: Stack, **settings: object) -> dict[str, Any]:
    return made(admin(stack, "POST", "/api/v1/apikeys", json={"name": "gov", **settings}))


def test_teams_and_users_are_managed_and_validated(stack: Stack) -> None:
    t = team(stack, max_budget=5, budget_duration="30d", rpm_limit=100, metadata={"cost_center": "42"})
    assert t["object"] == "team" and t["max_budget"] == 5 and t["metadata"] == {"cost_center": "42"}
    assert made(admin(stack, "GET", f"/api/v1/teams/{t['id']}"), 200)["name"] == t["name"]
    assert t["id"] in [x["id"] for x in made(admin(stack, "GET", "/api/v1/teams"), 200)["data"]]
    dup = admin(stack, "POST", "/api/v1/teams", json={"name": t["name"]})
    assert dup.status_code == 409 and dup.json()["error"]["code"] == "already_exists"
    for bad, param in (
        ({"name": "x", "budget_duration": "forever"}, "budget_duration"),
        ({"name": "x", "max_budget": -1}, "max_budget"),
        ({"name": "x", "colour": "red"}, "colour"),
        ({}, "name"),
    ):
        resp = admin(stack, "POST", "/api/v1/teams", json=bad)
        assert resp.status_code == 400 and resp.json()["error"]["param"] == param, resp.text
    changed = made(admin(stack, "PATCH", f"/api/v1/teams/{t['id']}", json={"max_budget": 7.5}), 200)
    assert changed["max_budget"] == 7.5 and changed["rpm_limit"] == 100
    assert admin(stack, "GET", f"/api/v1/teams/{uuid.uuid4()}").status_code == 404
    assert admin(stack, "GET", "/api/v1/teams/not-a-uuid").status_code == 404

    email = f"{uuid.uuid4().hex[:6]}@example.com"
    u = made(admin(stack, "POST", "/api/v1/users", json={"email": email, "team_ids": [t["id"]]}))
    assert u["id"] == email and u["team_ids"] == [t["id"]]
    assert made(admin(stack, "GET", f"/api/v1/teams/{t['id']}"), 200)["members"] == [email]
    missing = admin(stack, "POST", "/api/v1/users", json={"id": "nobody", "team_ids": [str(uuid.uuid4())]})
    assert missing.status_code == 400 and "no team" in missing.json()["error"]["message"]
    moved = made(admin(stack, "PATCH", f"/api/v1/users/{email}", json={"team_ids": []}), 200)
    assert moved["team_ids"] == []

    k = key(stack, team_id=t["id"], user_id=email)
    assert k["team_id"] == t["id"] and k["user_id"] == email
    assert admin(stack, "POST", "/api/v1/apikeys", json={"name": "x", "team_id": str(uuid.uuid4())}).status_code == 400
    # A team or user with live keys stays; once the keys are revoked, they go.
    assert admin(stack, "DELETE", f"/api/v1/teams/{t['id']}").status_code == 409
    assert admin(stack, "DELETE", f"/api/v1/users/{email}").status_code == 409
    made(admin(stack, "DELETE", f"/api/v1/apikeys/{k['id']}"), 200)
    assert made(admin(stack, "DELETE", f"/api/v1/teams/{t['id']}"), 200)["deleted"] is True
    assert made(admin(stack, "DELETE", f"/api/v1/users/{email}"), 200)["deleted"] is True


def test_a_key_is_bounded_by_its_teams_models_and_limits(stack: Stack) -> None:
    t = team(stack, allowed_models=[MODEL], rpm_limit=3)
    first, second = key(stack, team_id=t["id"])["key"], key(stack, team_id=t["id"])["key"]
    refused = chat(stack, first, model="local/slow")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"
    # The team's 3 requests a minute are shared by its keys.
    statuses = [chat(stack, k).status_code for k in (first, second, first, second)]
    assert statuses == [200, 200, 200, 429], statuses
    last = chat(stack, second)
    assert last.status_code == 429 and "team" in last.json()["error"]["message"]
    # Raising the team's limit applies at once on every gateway (the keys' cached copies are dropped).
    made(admin(stack, "PATCH", f"/api/v1/teams/{t['id']}", json={"rpm_limit": 1000}), 200)
    assert wait_for(lambda: chat(stack, first).status_code == 200, timeout=5)


def test_spend_in_money_is_recorded_and_grouped(stack: Stack) -> None:
    t = team(stack)
    email = f"{uuid.uuid4().hex[:6]}@example.com"
    made(admin(stack, "POST", "/api/v1/users", json={"email": email}))
    k = key(stack, team_id=t["id"], user_id=email, name=f"spender-{uuid.uuid4().hex[:4]}")
    answers = [chat(stack, k["key"], user="end-user-7", metadata={"feature": "search"}) for _ in range(3)]
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

    def by(group: str) -> dict[str, dict[str, Any]]:
        resp = made(admin(stack, "GET", "/api/v1/spend", params={"group_by": group}), 200)
        return {row["group"]: row for row in resp["data"]}

    assert wait_for(lambda: by("team").get(t["id"], {}).get("requests") == 3, timeout=10)
    row = by("team")[t["id"]]
    assert row["name"] == t["name"] and row["requests"] == 3
    assert row["cost"] == pytest.approx(expected, rel=1e-6)
    assert by("user")[email]["cost"] == pytest.approx(expected, rel=1e-6)
    assert by("key")[k["id"]]["name"] == k["name"]
    assert MODEL in by("model")
    assert time.strftime("%Y-%m-%d", time.gmtime()) in by("day")
    csv = admin(stack, "GET", "/api/v1/spend", params={"group_by": "team", "format": "csv"})
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[0] == "group,name,cost,requests,prompt_tokens,completion_tokens"
    assert any(line.startswith(f"{t['id']},{t['name']},") for line in csv.text.splitlines())
    assert admin(stack, "GET", "/api/v1/spend", params={"group_by": "planet"}).status_code == 400
    assert admin(stack, "GET", "/api/v1/spend", params={"since": "yesterday"}).status_code == 400
    # The key sees its own spend, and nothing else's; a plain key may not read everyone's.
    own = httpx.get(f"{stack.gateway_url}/api/v1/key/spend", headers={"Authorization": f"Bearer {k['key']}"})
    assert own.status_code == 200 and own.json()["total_cost"] == pytest.approx(expected, rel=1e-6)
    outside = {"Authorization": f"Bearer {k['key']}", "X-Forwarded-For": "203.0.113.7"}
    assert httpx.get(f"{stack.gateway_url}/api/v1/spend", headers=outside).status_code == 403


def test_a_money_budget_refuses_with_its_reset_time(stack: Stack) -> None:
    usage = chat(stack, key(stack)["key"]).json()["usage"]
    price = SERVED_PRICE
    one_request = (usage["prompt_tokens"] * price["inputPerMillion"] + 4 * price["outputPerMillion"]) / 1e6
    # What admission reserves: the prompt's bound for text (its bytes and the template's tokens) and max_tokens.
    bound = prompt_bound({"messages": [{"role": "user", "content": "hi"}]})
    reserved = (bound * price["inputPerMillion"] + 4 * price["outputPerMillion"]) / 1e6
    k = key(stack, max_budget=reserved + one_request * 1.5, budget_duration="1d")["key"]
    statuses = [chat(stack, k).status_code for _ in range(5)]
    # Admitted while the budget has room (reservations not yet settled may make that one fewer).
    assert statuses[0] == 200 and statuses.count(200) in (2, 3) and statuses[-1] == 429, statuses
    refused = chat(stack, k)
    err = refused.json()["error"]
    assert refused.status_code == 429 and err["code"] == "insufficient_quota" and "$" in err["message"]
    reset = int(refused.headers["x-ratelimit-reset-budget"])
    assert reset % 86400 == 0 and 0 < int(refused.headers["retry-after"]) <= 86400
    assert abs(reset - time.time() - int(refused.headers["retry-after"])) < 5


def test_regenerate_keeps_the_old_secret_for_its_grace_period(stack: Stack) -> None:
    k = key(stack, rpm_limit=1000)
    new = made(admin(stack, "POST", f"/api/v1/apikeys/{k['id']}/regenerate", json={"grace_period_s": 2}))
    assert new["id"] == k["id"] and new["key"] != k["key"] and new["rpm_limit"] == 1000
    assert new["previous_secret_valid_until"] is not None
    assert chat(stack, new["key"]).status_code == 200
    assert chat(stack, k["key"]).status_code == 200  # in its grace period
    assert wait_for(lambda: chat(stack, k["key"]).status_code == 401, timeout=8)
    assert chat(stack, new["key"]).status_code == 200
    # Without a grace period (an empty body), the old secret stops at once.
    newer = made(admin(stack, "POST", f"/api/v1/apikeys/{k['id']}/regenerate"))
    assert wait_for(lambda: chat(stack, new["key"]).status_code == 401, timeout=2)
    assert chat(stack, newer["key"]).status_code == 200
    bad = admin(stack, "POST", f"/api/v1/apikeys/{k['id']}/regenerate", json={"grace_period_s": -1})
    assert bad.status_code == 400


def test_block_and_unblock(stack: Stack) -> None:
    k = key(stack)
    assert chat(stack, k["key"]).status_code == 200
    assert made(admin(stack, "POST", f"/api/v1/apikeys/{k['id']}/block"), 200)["blocked"] is True
    assert wait_for(lambda: chat(stack, k["key"]).status_code == 401, timeout=2)
    assert "blocked" in chat(stack, k["key"]).json()["error"]["message"]
    assert made(admin(stack, "POST", f"/api/v1/apikeys/{k['id']}/unblock"), 200)["blocked"] is False
    assert wait_for(lambda: chat(stack, k["key"]).status_code == 200, timeout=2)


def test_max_parallel_requests_across_requests(stack: Stack) -> None:
    k = key(stack, max_parallel_requests=1)["key"]

    async def both() -> list[int]:
        async with httpx.AsyncClient(timeout=30) as client:
            body = {"model": "local/slow", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 6}
            sends = [
                client.post(
                    f"{stack.gateway_url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {k}"}
                )
                for _ in range(2)
            ]
            return sorted(r.status_code for r in await asyncio.gather(*sends))

    assert asyncio.run(both()) == [200, 429]
    assert chat(stack, k).status_code == 200  # the slot was freed


def test_admin_actions_are_audited(stack: Stack) -> None:
    k = key(stack)
    admin(stack, "PATCH", f"/api/v1/apikeys/{k['id']}", json={"rpm_limit": 7})
    admin(stack, "POST", f"/api/v1/apikeys/{k['id']}/block")
    entries = made(admin(stack, "GET", "/api/v1/audit", params={"target": f"key:{k['id']}"}), 200)["data"]
    assert [e["action"] for e in entries] == ["key.block", "key.update", "key.create"]
    update = entries[1]
    assert update["actor"] == "key:master" and update["before"]["rpm_limit"] == 0 and update["after"]["rpm_limit"] == 7
    assert "key_hash" not in str(entries) and k["key"] not in str(entries)
    assert admin(stack, "GET", "/api/v1/audit", params={"limit": 0}).status_code == 400
    outside = {"Authorization": f"Bearer {k['key']}", "X-Forwarded-For": "203.0.113.7"}
    assert httpx.get(f"{stack.gateway_url}/api/v1/audit", headers=outside).status_code in (401, 403)


def test_cli_manages_teams_users_keys_and_spend(stack: Stack) -> None:
    env = {**os.environ, "IIR_URL": stack.gateway_url, "IIR_ADMIN_KEY": MASTER_KEY}

    def iir(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "iir_cli", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    name = f"cli-team-{uuid.uuid4().hex[:6]}"
    t = json.loads(iir("teams", "create", name, "--max-budget", "10", "--budget-duration", "30d", "--rpm", "50"))
    assert t["name"] == name and t["max_budget"] == 10
    assert json.loads(iir("teams", "update", t["id"], "--tpm", "9000"))["tpm_limit"] == 9000
    email = f"{uuid.uuid4().hex[:6]}@example.com"
    u = json.loads(iir("users", "create", "--email", email, "--teams", t["id"], "--max-budget", "2"))
    assert u["id"] == email and u["team_ids"] == [t["id"]]
    assert email in iir("users", "list")
    k = json.loads(
        iir("keys", "create", "--name", "cli-gov", "--team", t["id"], "--user", email, "--max-parallel", "2")
    )
    assert k["team_id"] == t["id"] and k["max_parallel_requests"] == 2
    assert json.loads(iir("keys", "block", k["id"]))["blocked"] is True
    assert json.loads(iir("keys", "unblock", k["id"]))["blocked"] is False
    again = json.loads(iir("keys", "regenerate", k["id"], "--grace", "60"))
    assert again["key"] != k["key"] and again["id"] == k["id"]
    assert iir("spend", "--group-by", "team", "--format", "csv").startswith("group,name,cost")
    assert any(e["action"] == "key.regenerate" for e in json.loads(iir("audit", "--target", f"key:{k['id']}")))


def test_a_cut_stream_costs_what_was_generated(stack: Stack) -> None:
    k = key(stack)["key"]
    body = {"model": "local/slow", "messages": [{"role": "user", "content": "go on"}], "max_tokens": 40, "stream": True}
    with httpx.stream(
        "POST", f"{stack.gateway_url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {k}"}
    ) as resp:
        chunks = 0
        for line in resp.iter_lines():
            chunks += line.startswith("data: {")
            if chunks == 3:
                break  # the client leaves after three chunks

    def spent() -> dict[str, Any] | None:
        own = httpx.get(f"{stack.gateway_url}/api/v1/key/spend", headers={"Authorization": f"Bearer {k}"}).json()
        return own["data"][0] if own["data"] and own["data"][0]["completion_tokens"] else None

    row = wait_for(spent, timeout=10)
    assert row and 1 <= row["completion_tokens"] < 40 and row["cost"] > 0, row


def test_values_postgresql_cannot_store_are_refused_or_cleaned(stack: Stack) -> None:
    nul = admin(stack, "POST", "/api/v1/teams", json={"name": "nul", "metadata": {"k": "a\u0000b"}})
    assert nul.status_code == 400 and nul.json()["error"]["param"] == "metadata"
    k = key(stack)["key"]
    # A request's `user` and `metadata` with NULs: its spend record is cleaned, and no batch is poisoned.
    assert chat(stack, k, user="a\u0000b", metadata={"x\u0000": "y"}).status_code == 200
    assert chat(stack, k).status_code == 200

    def requests() -> int:
        own = httpx.get(f"{stack.gateway_url}/api/v1/key/spend", headers={"Authorization": f"Bearer {k}"}).json()
        return sum(row["requests"] for row in own["data"])

    assert wait_for(lambda: requests() == 2, timeout=10)


def test_a_team_keys_job_runs_and_is_listed_for_the_admin(stack: Stack) -> None:
    t = team(stack, rpm_limit=100, max_budget=5)
    k = key(stack, team_id=t["id"])
    queued = httpx.post(
        f"{stack.gateway_url}/v1/async/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "later"}], "max_tokens": 4},
        headers={"Authorization": f"Bearer {k['key']}"},
    )
    assert queued.status_code == 202, queued.text
    job_id = queued.json()["job_id"]

    def done() -> dict[str, Any] | None:
        work = made(admin(stack, "GET", f"/api/v1/apikeys/{k['id']}/jobs"), 200)
        job = next((j for j in work["jobs"] if j["job_id"] == job_id), None)
        return job if job and job["status"] == "completed" else None

    assert wait_for(done, timeout=15)  # run with the team's limits and budget, restored from the job
    assert admin(stack, "GET", f"/api/v1/apikeys/{uuid.uuid4()}/jobs").status_code == 404
