"""RPM, TPM (streams included), budgets and revocation, exact across two gateways under concurrency."""

from __future__ import annotations

import asyncio
import math
import re
import time
import uuid

import httpx
import redis

from iir_gateway.accounting.rate_limiter import RateLimiter
from iir_gateway.metrics import GatewayMetrics
from tests.concurrency.conftest import Pair, bearer, run, stream_usage
from tests.conftest import SERVED
from tests.waiting import wait_for

FAST = {"model": f"local/{SERVED}", "messages": [{"role": "user", "content": "count to ten"}], "max_tokens": 31}
SLOW = {**FAST, "model": "local/slow"}
# What the gateway reserves for FAST: (12 characters + 16 per message) / 4, plus max_tokens.
ESTIMATE = math.ceil((12 + 16) / 4) + 31


def test_rpm_is_exact_across_two_gateways(pair: Pair) -> None:
    key = pair.key(rpm_limit=10)["key"]

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=30) as c:
            return [
                r.status_code
                for r in await asyncio.gather(
                    *(
                        c.post(f"{(pair.a, pair.b)[i % 2]}/v1/chat/completions", json=FAST, headers=bearer(key))
                        for i in range(40)
                    )
                )
            ]

    codes = run(burst())
    assert codes.count(200) == 10 and codes.count(429) == 30


def test_tpm_holds_for_sequential_streams(pair: Pair) -> None:
    key = pair.key(tpm_limit=500)["key"]
    started = time.monotonic()

    async def one_by_one() -> list[tuple[int, int]]:
        async with httpx.AsyncClient(timeout=30) as c:
            return [await stream_usage(c, (pair.a, pair.b)[i % 2], key, FAST) for i in range(40)]

    results = run(one_by_one())
    refill = (time.monotonic() - started) * 500 / 60
    consumed = sum(tokens for status, tokens in results if status == 200)
    assert any(status == 429 for status, _ in results)
    assert consumed <= 500 + refill + ESTIMATE, (consumed, refill)


def test_tpm_holds_for_concurrent_streams(pair: Pair) -> None:
    key = pair.key(tpm_limit=600)["key"]
    started = time.monotonic()

    async def together() -> list[tuple[int, int]]:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=100)) as c:
            return await asyncio.gather(*(stream_usage(c, (pair.a, pair.b)[i % 2], key, SLOW) for i in range(60)))

    results = run(together())
    refill = (time.monotonic() - started) * 600 / 60
    admitted = [tokens for status, tokens in results if status == 200]
    # Every admitted stream held its whole estimate while it ran.
    assert len(admitted) * ESTIMATE <= 600 + refill + ESTIMATE, (len(admitted), refill)
    assert sum(admitted) <= 600 + refill + ESTIMATE


def test_a_request_larger_than_the_bucket_is_refused(pair: Pair) -> None:
    key = pair.key(tpm_limit=1000)["key"]
    resp = httpx.post(f"{pair.a}/v1/chat/completions", json={**FAST, "max_tokens": 20000}, headers=bearer(key))
    assert resp.status_code == 429 and "Request too large" in resp.json()["error"]["message"]
    assert httpx.post(f"{pair.b}/v1/chat/completions", json=FAST, headers=bearer(key)).status_code == 200


def test_debt_is_kept_until_the_bucket_refills(pair: Pair) -> None:
    r = redis.Redis.from_url(pair.stack.redis_url)
    prefix = pair.stack.env["IIR_REDIS_PREFIX"]
    limiter = RateLimiter(
        __import__("redis.asyncio", fromlist=["Redis"]).from_url(pair.stack.redis_url), GatewayMetrics(), prefix
    )
    from iir_gateway.principal import Principal

    who = Principal(
        key_id=f"debt-{uuid.uuid4().hex[:6]}", name="d", admin=False, priority=0, allowed_models=(), tpm_limit=300
    )

    async def overspend() -> None:
        admission = await limiter.admit(who, 10)
        await limiter.settle(who, admission, 800)  # used 790 more than it reserved: 490 in debt
        await limiter.redis.aclose()

    run(overspend())
    bucket = f"{prefix}rl:{who.key_id}:tpm"
    assert float(r.hget(bucket, "t") or 0) < -480
    # The key lives at least until the debt is paid and the bucket full again (790 tokens at 5/s).
    assert r.pttl(bucket) > 150_000


def test_budget_overshoots_by_at_most_one_request(pair: Pair) -> None:
    made = pair.key(budget_tokens=300, budget_period="day")

    async def together() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as c:
            return await asyncio.gather(
                *(
                    c.post(f"{(pair.a, pair.b)[i % 2]}/v1/chat/completions", json=FAST, headers=bearer(made["key"]))
                    for i in range(30)
                )
            )

    answers = run(together())
    used = sum(a.json()["usage"]["total_tokens"] for a in answers if a.status_code == 200)
    refused = [a for a in answers if a.status_code == 429]
    assert refused and all(a.json()["error"]["code"] == "insufficient_quota" for a in refused)
    assert used <= 300 + ESTIMATE, used


def test_a_revocation_is_never_overtaken_by_a_stale_validation(pair: Pair) -> None:
    async def race(key: str, key_id: str) -> None:
        async with httpx.AsyncClient(timeout=30) as c:
            uses = [c.post(f"{pair.b}/v1/chat/completions", json=FAST, headers=bearer(key)) for _ in range(10)]
            await asyncio.gather(*uses, asyncio.to_thread(pair.admin, "DELETE", f"/api/v1/apikeys/{key_id}"))

    leaked = 0
    for _ in range(200):
        made = pair.key()
        run(race(made["key"], made["id"]))

        def refused(key: str = made["key"]) -> bool:
            return httpx.post(f"{pair.b}/v1/chat/completions", json=FAST, headers=bearer(key)).status_code == 401

        # The revocation event travels in milliseconds; a stale cache entry would live 30 s.
        if not wait_for(refused, timeout=5):
            leaked += 1
    assert leaked == 0


def _validations(metrics_url: str) -> float:
    found = re.search(r"^iir_gateway_auth_validations_total (\S+)", httpx.get(metrics_url).text, re.M)
    assert found is not None, "no auth validations counted"
    return float(found.group(1))


def test_a_burst_on_a_cold_key_is_one_validation(pair: Pair) -> None:
    key = pair.key()["key"]
    before = _validations(pair.stack.metrics_url)

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=300)) as c:
            return [
                r.status_code
                for r in await asyncio.gather(
                    *(c.post(f"{pair.a}/v1/chat/completions", json=FAST, headers=bearer(key)) for _ in range(300))
                )
            ]

    codes = run(burst())
    assert codes.count(200) == 300
    assert _validations(pair.stack.metrics_url) - before == 1
