"""API keys end to end through the gateway: admin API, revocation across replicas, limits, usage, CLI."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from iir_dev.stack import REPO, Stack
from tests.conftest import MASTER_KEY, SERVED, STATIC_KEY
from tests.json_values import json_object
from tests.waiting import wait_for

MODEL = f"local/{SERVED}"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def create(stack: Stack, headers: dict[str, str] | None = None, **body: object) -> dict[str, Any]:
    resp = httpx.post(f"{stack.gateway_url}/api/v1/apikeys", json=body, headers=headers or {})
    assert resp.status_code == 201, resp.text
    return json_object(resp.json())


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def chat(url: str, key: str, body: dict[str, Any] | None = None, /, **headers: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json=body or CHAT, headers={**bearer(key), **headers}, timeout=20)


def test_create_use_list_get_from_a_trusted_network(stack: Stack) -> None:
    made = create(stack, description="integration test key", priority=10)  # no key: the caller is loopback
    key = made.pop("key")
    assert key.startswith("iir-") and made["prefix"] == key[:12] and made["priority"] == 10
    assert made["name"] == "integration test key" and made["revoked_at"] is None
    assert chat(stack.gateway_url, key).status_code == 200
    listed = httpx.get(f"{stack.gateway_url}/api/v1/apikeys").json()["data"]
    assert made["id"] in [k["id"] for k in listed]
    got = httpx.get(f"{stack.gateway_url}/api/v1/apikeys/{made['id']}")
    assert got.status_code == 200 and "key" not in got.json() and key not in got.text
    assert httpx.get(f"{stack.gateway_url}/api/v1/apikeys/00000000-0000-0000-0000-000000000000").status_code == 404
    assert httpx.get(f"{stack.gateway_url}/api/v1/apikeys/not-a-uuid").status_code == 404


def test_admin_api_needs_an_admin_key_off_trusted_networks(stack: Stack, api_key: str) -> None:
    url = f"{stack.gateway_url}/api/v1/apikeys"
    outside = {"X-Forwarded-For": "203.0.113.9"}
    assert httpx.get(url, headers=outside).status_code == 401
    denied = httpx.get(url, headers={**outside, **bearer(api_key)})
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "admin_required"
    assert httpx.get(url, headers={**outside, **bearer(MASTER_KEY)}).status_code == 200
    bad = httpx.post(url, json={"name": "x", "rpm_limit": -1}, headers=bearer(MASTER_KEY))
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "rpm_limit"
    unknown = httpx.post(url, json={"name": "x", "colour": "red"}, headers=bearer(MASTER_KEY))
    assert unknown.status_code == 400


def test_static_keys_work(stack: Stack) -> None:
    assert chat(stack.gateway_url, STATIC_KEY).status_code == 200


def test_revocation_reaches_every_gateway_long_before_its_cache_expires(stack: Stack) -> None:
    replica = stack.start_gateway_replica("gateway-b")
    made = create(stack, name="revoke-me")
    for url in (stack.gateway_url, replica):
        assert chat(url, made["key"]).status_code == 200  # now cached by both replicas
    revoked = httpx.delete(f"{stack.gateway_url}/api/v1/apikeys/{made['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    # The revocation event travels in milliseconds; without it the other replica's copy would live 30 s.
    wait_for(lambda: chat(replica, made["key"]).status_code == 401, timeout=10, what="the other replica to refuse")
    assert chat(stack.gateway_url, made["key"]).json()["error"]["code"] == "invalid_api_key"


def test_rotate_replaces_the_key(stack: Stack) -> None:
    made = create(stack, name="rotate-me", rpm_limit=100, allowed_models=["local/*"])
    assert chat(stack.gateway_url, made["key"]).status_code == 200
    rotated = httpx.post(f"{stack.gateway_url}/api/v1/apikeys/{made['id']}/rotate").json()
    assert rotated["replaces"] == made["id"] and rotated["id"] != made["id"]
    assert rotated["rpm_limit"] == 100 and rotated["allowed_models"] == ["local/*"]
    assert chat(stack.gateway_url, rotated["key"]).status_code == 200
    wait_for(lambda: chat(stack.gateway_url, made["key"]).status_code == 401, timeout=10, what="the old key refused")
    again = httpx.post(f"{stack.gateway_url}/api/v1/apikeys/{made['id']}/rotate")
    assert again.status_code == 409


def test_scopes_from_the_admin_api(stack: Stack) -> None:
    made = create(stack, name="scoped", allowed_models=["local/llama-*"])
    assert chat(stack.gateway_url, made["key"]).status_code == 200
    other = chat(stack.gateway_url, made["key"], {**CHAT, "model": "local/slow"})
    assert other.status_code == 403 and other.json()["error"]["code"] == "model_not_allowed"


def test_expired_key_is_refused(stack: Stack) -> None:
    made = create(stack, name="short-lived", expires_at=(datetime.now(UTC) + timedelta(seconds=4)).isoformat())
    assert chat(stack.gateway_url, made["key"]).status_code == 200

    def refused() -> httpx.Response | None:
        answer = chat(stack.gateway_url, made["key"])
        return answer if answer.status_code != 200 else None

    expired = wait_for(refused, timeout=30, interval=0.25, what="the key to expire")
    assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]
    past = httpx.post(f"{stack.gateway_url}/api/v1/apikeys", json={"name": "x", "expires_at": "2001-01-01T00:00:00Z"})
    assert past.status_code == 400


async def _burst(url: str, key: str, body: dict[str, Any], n: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=20) as client:
        return await asyncio.gather(
            *(client.post(f"{url}/v1/chat/completions", json=body, headers=bearer(key)) for _ in range(n))
        )


async def test_rpm_limit_counts_exactly_under_concurrency(stack: Stack) -> None:
    made = create(stack, name="rpm", rpm_limit=5)
    responses = await _burst(stack.gateway_url, made["key"], CHAT, 12)
    ok = [r for r in responses if r.status_code == 200]
    limited = [r for r in responses if r.status_code == 429]
    assert (len(ok), len(limited)) == (5, 7)
    for r in responses:
        assert r.headers["x-ratelimit-limit-requests"] == "5"
        assert r.headers["x-ratelimit-reset-requests"].endswith("s")
    assert sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in ok) == [0, 1, 2, 3, 4]
    err = limited[0].json()["error"]
    assert err["code"] == "rate_limit_exceeded" and err["type"] == "requests"
    assert int(limited[0].headers["retry-after"]) >= 1


async def test_tpm_limit_counts_exactly_under_concurrency(stack: Stack) -> None:
    # Each request reserves ceil((2 + 16) / 4) = 5 prompt tokens + max_tokens 2 = 7 tokens; 70 allow 10.
    made = create(stack, name="tpm", tpm_limit=70)
    body = {**CHAT, "model": "local/slow", "max_tokens": 2}  # slow: every admission precedes any settling
    responses = await _burst(stack.gateway_url, made["key"], body, 15)
    assert sorted(r.status_code for r in responses) == [200] * 10 + [429] * 5
    limited = next(r for r in responses if r.status_code == 429)
    assert limited.json()["error"]["type"] == "tokens" and limited.headers["x-ratelimit-limit-tokens"] == "70"

    def tokens_left() -> int:
        after = chat(stack.gateway_url, made["key"], {**CHAT, "max_tokens": 1})
        return int(after.headers.get("x-ratelimit-remaining-tokens", "0"))

    # Settling gives back what the estimate over-reserved: 4 of each request's 7 tokens, 40 in all; the
    # bucket's refill (70 a minute) alone would take 20 s to leave 20 past a probe.
    wait_for(lambda: tokens_left() >= 20, timeout=10, interval=0.2, what="the over-reserved tokens given back")


def test_token_budget(stack: Stack) -> None:
    made = create(stack, name="budget", budget_tokens=30, budget_period="day")
    # The worst case of a request (its prompt's estimate and max_tokens 8: 26) is taken at admission, so
    # whether or not the first one has settled yet, the budget then has too little left for another.
    codes = [chat(stack.gateway_url, made["key"], {**CHAT, "max_tokens": 8}).status_code for _ in range(6)]
    assert codes[0] == 200 and codes[-1] == 429
    refused = chat(stack.gateway_url, made["key"], {**CHAT, "max_tokens": 8})  # more than the budget has left
    assert refused.json()["error"]["code"] == "insufficient_quota"


def test_failed_authentications_are_limited_per_address(stack: Stack, api_key: str) -> None:
    attacker = {"X-Forwarded-For": "198.51.100.7"}
    codes = [chat(stack.gateway_url, f"iir-guess-{i:04d}-xxxxxxxx", **attacker).status_code for i in range(21)]
    assert codes[:20] == [401] * 20 and codes[20] == 429
    blocked = chat(stack.gateway_url, "iir-another-guess-xxxxxxxx", **attacker)
    assert blocked.json()["error"]["code"] == "too_many_auth_failures" and int(blocked.headers["retry-after"]) > 0
    assert chat(stack.gateway_url, "iir-guess-0000-xxxxxxxx", **{"X-Forwarded-For": "198.51.100.8"}).status_code == 401
    assert chat(stack.gateway_url, api_key).status_code == 200  # others are unaffected


def test_usage_is_recorded_per_model_and_day(stack: Stack) -> None:
    made = create(stack, name="usage")
    plain = chat(stack.gateway_url, made["key"]).json()["usage"]
    with httpx.stream(
        "POST", f"{stack.gateway_url}/v1/chat/completions", headers=bearer(made["key"]), json={**CHAT, "stream": True}
    ) as resp:
        lines = [line for line in resp.iter_lines() if line.startswith("data: {")]
    assert all('"usage"' not in line for line in lines)  # not asked for: hidden though the gateway counts it

    def recorded() -> dict[str, Any] | None:
        usage = json_object(httpx.get(f"{stack.gateway_url}/api/v1/apikeys/{made['id']}/usage").json())
        return usage if usage["totals"]["requests"] >= 2 else None

    row = wait_for(recorded, timeout=10, interval=0.1, what="both requests' usage")["data"][0]
    assert row["model"] == MODEL and row["day"] == datetime.now(UTC).strftime("%Y-%m-%d")
    assert row["requests"] == 2
    assert row["prompt_tokens"] == 2 * plain["prompt_tokens"]
    assert row["completion_tokens"] == 2 * plain["completion_tokens"]
    assert httpx.get(f"{stack.gateway_url}/api/v1/apikeys/{made['id']}").json()["last_used_at"]


def test_cli_manages_keys(stack: Stack) -> None:
    env = {**os.environ, "IIR_URL": stack.gateway_url, "IIR_API_KEY": MASTER_KEY}

    def iir(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "iir_cli", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=30
        )

    created = iir("keys", "create", "--name", "from-cli", "--rpm", "60", "--models", "local/*")
    assert created.returncode == 0, created.stderr
    key = created.stderr.strip().splitlines()[-1]
    assert key.startswith("iir-") and chat(stack.gateway_url, key).status_code == 200
    listed = iir("keys", "list")
    assert "from-cli" in listed.stdout and key not in listed.stdout
    key_id = next(line.split()[0] for line in listed.stdout.splitlines() if "from-cli" in line)
    updated = iir("keys", "update", key_id, "--rpm", "30", "--name", "cli-renamed")
    assert updated.returncode == 0, updated.stderr
    assert '"rpm_limit": 30' in updated.stdout and "cli-renamed" in updated.stdout
    assert iir("keys", "revoke", key_id).returncode == 0
    missing = iir("keys", "revoke", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode != 0 and "404" in missing.stderr
    generated = iir("generate-api-key", "--length", "32", "--prefix", "sk-")
    assert generated.stdout.startswith("sk-") and len(generated.stdout.strip()) == 35


def test_keys_never_reach_logs(stack: Stack) -> None:
    made = create(stack, name="secret-keeper")
    ids = [chat(stack.gateway_url, key).headers["x-request-id"] for key in (made["key"], made["key"] + "-wrong")]
    gateway_log = stack.processes["gateway"].log_path
    wait_for(lambda: all(i in gateway_log.read_text() for i in ids), what="both requests in the access log")
    for process in stack.processes.values():
        text = process.log_path.read_text()
        assert made["key"] not in text, f"{process.name} logged a key"
        assert MASTER_KEY not in text


@pytest.mark.parametrize("path", ["/api/v1/apikeys/x/usage?since=yesterday"])
def test_bad_usage_query_is_400(stack: Stack, path: str) -> None:
    made = create(stack, name="q")
    resp = httpx.get(f"{stack.gateway_url}{path.replace('/x/', '/' + made['id'] + '/')}")
    assert resp.status_code == 400


def test_a_request_larger_than_the_tpm_limit_is_refused_up_front(stack: Stack) -> None:
    made = create(stack, name="tpm-small", tpm_limit=40)
    big = {**CHAT, "messages": [{"role": "user", "content": "word " * 200}]}  # about 250 prompt tokens
    refused = chat(stack.gateway_url, made["key"], big)
    assert refused.status_code == 429 and refused.json()["error"]["message"].startswith("Request too large")
    assert "retry-after" not in refused.headers  # waiting would not help
    asking = chat(stack.gateway_url, made["key"], {**CHAT, "max_tokens": 100})  # the max_tokens it asks for counts
    assert asking.status_code == 429 and "requested 105" in asking.json()["error"]["message"]
    # Nothing was taken from the bucket: a request that fits still passes.
    assert chat(stack.gateway_url, made["key"], {**CHAT, "max_tokens": 4}).status_code == 200


def test_a_key_reads_its_own_info_and_usage(stack: Stack) -> None:
    made = create(stack, name="self-service", rpm_limit=100, allowed_models=["local/*"])
    assert chat(stack.gateway_url, made["key"]).status_code == 200
    info = httpx.get(f"{stack.gateway_url}/api/v1/key/info", headers=bearer(made["key"])).json()
    assert info["id"] == made["id"] and info["rpm_limit"] == 100 and info["allowed_models"] == ["local/*"]
    assert "key" not in info and made["key"] not in str(info)  # never the secret

    def used() -> dict[str, Any] | None:
        usage = httpx.get(f"{stack.gateway_url}/api/v1/key/usage", headers=bearer(made["key"])).json()
        return usage if usage["totals"]["requests"] >= 1 else None

    assert wait_for(used, timeout=5, what="the key's usage")["key_id"] == made["id"]
    assert httpx.get(f"{stack.gateway_url}/api/v1/key/info").status_code == 401
    configured = httpx.get(f"{stack.gateway_url}/api/v1/key/info", headers=bearer(STATIC_KEY)).json()
    assert configured["configured"] is True and configured["admin"] is False


def test_a_key_is_updated_in_place_and_every_gateway_applies_it(stack: Stack) -> None:
    made = create(stack, name="to-update", rpm_limit=100)
    admin = {"Authorization": f"Bearer {MASTER_KEY}"}
    assert chat(stack.gateway_url, made["key"]).headers["x-ratelimit-limit-requests"] == "100"  # cached now
    updated = httpx.patch(
        f"{stack.gateway_url}/api/v1/apikeys/{made['id']}",
        headers=admin,
        json={"rpm_limit": 7, "name": "renamed", "allowed_models": ["local/*"], "expires_in_days": 1},
    )
    assert updated.status_code == 200, updated.text
    got = updated.json()
    assert (got["rpm_limit"], got["name"], got["allowed_models"]) == (7, "renamed", ["local/*"]) and got["expires_at"]
    assert got["tpm_limit"] == made["tpm_limit"] and got["prefix"] == made["prefix"]  # the rest, and the secret, stay

    def applied() -> bool:
        return bool(chat(stack.gateway_url, made["key"]).headers.get("x-ratelimit-limit-requests") == "7")

    assert wait_for(applied, timeout=2, interval=0.05, what="the gateway to drop its cached copy")
    cleared = httpx.patch(f"{stack.gateway_url}/api/v1/apikeys/{made['id']}", headers=admin, json={"expires_at": None})
    assert cleared.json()["expires_at"] is None
    bad = httpx.patch(f"{stack.gateway_url}/api/v1/apikeys/{made['id']}", headers=admin, json={"rpm_limit": -1})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "rpm_limit"
    unknown = httpx.patch(f"{stack.gateway_url}/api/v1/apikeys/{made['id']}", headers=admin, json={"secret": "x"})
    assert unknown.status_code == 400  # nothing else can be set (the secret, admin)
    missing = httpx.patch(
        f"{stack.gateway_url}/api/v1/apikeys/00000000-0000-0000-0000-000000000000", headers=admin, json={"rpm_limit": 1}
    )
    assert missing.status_code == 404
    not_admin = httpx.patch(
        f"{stack.gateway_url}/api/v1/apikeys/{made['id']}", headers=bearer(made["key"]), json={"rpm_limit": 0}
    )
    assert not_admin.status_code == 403
    httpx.delete(f"{stack.gateway_url}/api/v1/apikeys/{made['id']}", headers=admin)
    revoked = httpx.patch(f"{stack.gateway_url}/api/v1/apikeys/{made['id']}", headers=admin, json={"rpm_limit": 1})
    assert revoked.status_code == 409
