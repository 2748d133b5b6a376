"""Governance through real processes: the `iir` CLI against the gateway's admin API, and the spend of a
stream its client leaves (the admin API's logic is tested through the gateway app in
tests/gateway/test_governance.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from typing import Any

import httpx

from iir_dev.stack import REPO, Stack
from tests.conftest import MASTER_KEY
from tests.waiting import wait_for


def new_key(stack: Stack) -> str:
    resp = httpx.post(
        f"{stack.gateway_url}/api/v1/apikeys",
        json={"name": "gov"},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        timeout=20,
    )
    assert resp.status_code == 201, resp.text
    return str(resp.json()["key"])


def test_cli_manages_teams_users_keys_and_spend(stack: Stack) -> None:
    env = {**os.environ, "IIR_URL": stack.gateway_url, "IIR_API_KEY": MASTER_KEY}

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
    k = new_key(stack)
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
