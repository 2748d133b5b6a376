"""Issue 29, limits and budgets: Redis refusing writes (finding 1), budgets overshot by long answers
(finding 4), parallel slots of a dead gateway (finding 12), budget windows lost with Redis (finding 13).

The stack here runs two gateways on a Redis of its own (a throwaway redis-server), so a test may make it
refuse writes or lose its keys without touching anyone else's."""

from __future__ import annotations

import asyncio
import functools
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
import redis.asyncio as aioredis

from iir_dev import datastores
from iir_dev.stack import Stack
from iir_gateway.accounting.rate_limiter import RateLimiter
from iir_gateway.accounting.token_estimate import prompt_bound
from iir_gateway.errors import APIError
from iir_gateway.metrics import GatewayMetrics
from iir_gateway.principal import Principal
from iir_gateway.settings import GatewaySettings
from tests.conftest import EMBEDDER, MASTER_KEY, SERVED, SERVED_PRICE, make_stack
from tests.waiting import eventually, unavailable, wait_for

CHAT = f"local/{SERVED}"
IN_NANO = SERVED_PRICE["inputPerMillion"] * 1000  # nano-USD per prompt token
OUT_NANO = SERVED_PRICE["outputPerMillion"] * 1000  # nano-USD per completion token
BUDGET_MAX_TOKENS = 200  # what a budgeted request without max_tokens may generate, in this stack


class Pair:
    def __init__(self, stack: Stack, b: str, redis_url: str) -> None:
        self.stack = stack
        self.a = stack.gateway_url
        self.b = b
        self.redis_url = redis_url
        self.prefix = stack.env["IIR_REDIS_PREFIX"]

    def key(self, **settings: Any) -> dict[str, Any]:
        resp = self.admin("POST", "/api/v1/apikeys", json={"name": f"r3-{uuid.uuid4().hex[:6]}", **settings})
        assert resp.status_code == 201, resp.text
        return dict(resp.json())

    def admin(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(
            method, f"{self.a}{path}", headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=30, **kw
        )

    def chat(self, url: str, key: str, **body: Any) -> httpx.Response:
        payload = {"model": CHAT, "messages": [{"role": "user", "content": "tell a story"}], **body}
        return httpx.post(f"{url}/v1/chat/completions", json=payload, headers=bearer(key), timeout=30)

    def spend(self, key_id: str) -> dict[str, Any]:
        rows = self.admin("GET", "/api/v1/spend", params={"group_by": "key"}).json()["data"]
        return next((r for r in rows if r["group"] == key_id), {"cost": 0.0, "requests": 0})


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throwaway redis-server: these tests make it refuse writes and lose keys."""
    if not shutil.which("redis-server"):
        unavailable("redis-server not on PATH: the limits tests need a Redis of their own")
    store = datastores._redis_from_binary(Path(tmp_path_factory.mktemp("r3-limits-redis")))
    assert store is not None
    yield store.url
    store.stop()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, database_url: str, own_redis: str, slow_sim: str) -> Iterator[Pair]:
    stack = make_stack(
        Path(tmp_path_factory.mktemp("r3-limits")),
        database_url,
        own_redis,
        slow_sim,
        IIR_SIM_TOKENS_PER_S="400",  # streams that overlap
        IIR_BUDGET_MAX_TOKENS=str(BUDGET_MAX_TOKENS),
        IIR_CACHE_ENABLED="false",
    )
    b = stack.start_gateway_replica("gateway-b")
    yield Pair(stack, b, own_redis)
    stack.stop()


def _metric(text: str, name: str, labels: str = "") -> float:
    found = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


# Finding 1: Redis refusing writes (OOM, noeviction) made every limit and budget fail open.


def test_limits_do_not_fail_open_when_redis_refuses_writes(pair: Pair) -> None:
    rpm3 = pair.key(rpm_limit=3)
    broke = pair.key(max_budget=0.000001)
    funded = pair.key(max_budget=1.0)
    plain = pair.key()
    for made in (rpm3, broke, funded, plain):  # validated (and cached) by both gateways while Redis still writes
        for url in (pair.a, pair.b):
            assert pair.chat(url, made["key"], max_tokens=5).status_code in (200, 429)
    assert pair.chat(pair.a, broke["key"], max_tokens=5).status_code == 429
    r = redis.Redis.from_url(pair.redis_url)
    r.config_set("maxmemory", "1")  # this test's own Redis: every write is refused (OOM)
    try:
        with pytest.raises(redis.exceptions.ResponseError, match="maxmemory"):
            r.set(f"{pair.prefix}probe", "1")
        rpm_codes = [pair.chat((pair.a, pair.b)[i % 2], rpm3["key"], max_tokens=5) for i in range(12)]
        budget_codes = [pair.chat((pair.a, pair.b)[i % 2], funded["key"], max_tokens=5) for i in range(12)]
        # An exhausted budget is still refused (Redis answers reads), never admitted.
        broke_codes = {pair.chat((pair.a, pair.b)[i % 2], broke["key"], max_tokens=5).status_code for i in range(12)}
        assert broke_codes <= {429, 503}, broke_codes
        # Fail closed (the default): 0 of 12 admitted, each a retryable OpenAI-shaped 503.
        for resp in rpm_codes + budget_codes:
            assert resp.status_code == 503, resp.text
            assert resp.json()["error"]["code"] == "limits_unavailable" and resp.headers["retry-after"] == "1"
        # A key without limits or budgets keeps working.
        assert pair.chat(pair.b, plain["key"], max_tokens=5).status_code == 200
        metrics = httpx.get(pair.stack.metrics_url).text
        assert _metric(metrics, "iir_gateway_ratelimit_errors_total", '{outcome="refused"}') >= 12
        assert _metric(metrics, "iir_gateway_limits_degraded") == 1
        assert "limits: Redis failed" in pair.stack.processes["gateway"].log_tail(400)
        asyncio.run(_local_fallback_is_bounded(pair.redis_url))
    finally:
        r.config_set("maxmemory", "0")
    assert wait_for(lambda: pair.chat(pair.a, rpm3["key"], max_tokens=5).status_code in (200, 429), timeout=5)
    assert _metric(httpx.get(pair.stack.metrics_url).text, "iir_gateway_limits_degraded") == 0


async def _local_fallback_is_bounded(url: str) -> None:
    """IIR_LIMITS_ON_REDIS_ERROR=local: the key's own RPM, counted in this process; budgets refused."""
    client = aioredis.from_url(url)
    limiter = RateLimiter(client, GatewayMetrics(), f"r3-local-{uuid.uuid4().hex[:6]}:", on_redis_error="local")
    principal = functools.partial(Principal, name="l", admin=False, priority=0, allowed_models=())
    rpm3 = principal(key_id=f"rpm-{uuid.uuid4().hex[:6]}", rpm_limit=3)
    broke = principal(key_id=f"money-{uuid.uuid4().hex[:6]}", max_budget=1.0)
    admitted = 0
    for _ in range(12):
        try:
            await limiter.admit(rpm3, 10)
            admitted += 1
        except APIError as err:
            assert err.status == 429 and err.code == "rate_limit_exceeded"
    assert admitted == 3
    with pytest.raises(APIError) as refused:
        await limiter.admit(broke, 10)
    assert refused.value.status == 503
    await client.aclose()


# Finding 4: the reservation was the prompt plus 256 tokens, and the check `used >= max`.


async def _stream(client: httpx.AsyncClient, url: str, key: str) -> tuple[int, int, int]:
    """(status, completion tokens, the x-iir-max-tokens it was given) of one stream without max_tokens
    that would run to the model's context (vLLM's ignore_eos)."""
    body = {
        "model": CHAT,
        "messages": [{"role": "user", "content": "tell a story"}],
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with client.stream("POST", f"{url}/v1/chat/completions", headers=bearer(key), json=body) as resp:
        if resp.status_code != 200:
            await resp.aread()
            return resp.status_code, 0, 0
        completion = 0
        async for line in resp.aiter_lines():
            if line.startswith("data: {") and '"usage":{' in line:
                completion = orjson.loads(line[6:])["usage"]["completion_tokens"]
        return 200, completion, int(resp.headers["x-iir-max-tokens"])


def test_long_answers_without_max_tokens_stay_within_the_money_budget_on_two_gateways(pair: Pair) -> None:
    budget = 0.2  # 1,000 completion tokens at this model's price; each answer would run to 4,096
    made = pair.key(max_budget=budget)

    async def wave() -> list[tuple[int, int, int]]:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=50)) as client:
            return await asyncio.gather(*(_stream(client, (pair.a, pair.b)[i % 2], made["key"]) for i in range(16)))

    admitted: list[tuple[int, int, int]] = []
    for _ in range(10):
        results = asyncio.run(wave())
        assert all(status in (200, 429) for status, _, _ in results), results
        admitted += [r for r in results if r[0] == 200]
        if all(status == 429 for status, _, _ in results):
            break
    else:
        raise AssertionError("the budget never refused")
    assert len(admitted) >= 4, admitted  # several streams ran at once, each capped
    assert all(0 < given <= BUDGET_MAX_TOKENS and tokens <= given for _, tokens, given in admitted), admitted
    wait_for(lambda: pair.spend(made["id"])["requests"] >= len(admitted), timeout=15, what="spend records")
    spent = pair.spend(made["id"])["cost"]
    # The worst case of every admitted request (the prompt's bound for text) fitted in what was left.
    print(f"budget ${budget}: {len(admitted)} streams admitted, spent ${spent:.6f}")
    assert spent <= budget, spent
    refused = pair.chat(pair.b, made["key"])
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "insufficient_quota"


def test_one_request_cannot_spend_past_a_tiny_budget(pair: Pair) -> None:
    # The prompt's bound, then 5 completion tokens at this model's price.
    prompt = prompt_bound({"messages": [{"role": "user", "content": "tell a story"}], "ignore_eos": True})
    budget = (prompt * IN_NANO + 5 * OUT_NANO) / 1e9
    made = pair.key(max_budget=budget)
    refused = pair.chat(pair.a, made["key"], max_tokens=4000, ignore_eos=True)
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert error["code"] == "insufficient_quota" and "left" in error["message"] and "max_tokens" in error["message"]
    capped = pair.chat(pair.b, made["key"], ignore_eos=True)  # no max_tokens: capped at what the budget pays
    assert capped.status_code == 200, capped.text
    given = int(capped.headers["x-iir-max-tokens"])
    assert 1 <= given <= 5 and capped.json()["usage"]["completion_tokens"] <= given
    wait_for(lambda: pair.spend(made["id"])["requests"] >= 1, timeout=15, what="the spend record")
    assert pair.spend(made["id"])["cost"] <= budget


# Finding 12: a crashed gateway's parallel slots stayed taken for the 900 s lease.


def test_a_dead_gateways_parallel_slots_free_within_a_lease(pair: Pair) -> None:
    assert GatewaySettings().parallel_lease_s <= 60

    async def scenario() -> None:
        prefix = f"r3-par-{uuid.uuid4().hex[:6]}:"
        live_client, dead_client = aioredis.from_url(pair.redis_url), aioredis.from_url(pair.redis_url)
        live = RateLimiter(live_client, GatewayMetrics(), prefix, parallel_lease_s=1.5)
        dead = RateLimiter(dead_client, GatewayMetrics(), prefix, parallel_lease_s=1.5)  # never renews
        who = Principal(
            key_id=f"par-{uuid.uuid4().hex[:6]}",
            name="p",
            admin=False,
            priority=0,
            allowed_models=(),
            max_parallel_requests=2,
        )
        renewals = asyncio.create_task(live.run_renewals())
        started = time.time()
        kept = await live.admit(who, 0, hold=True)  # a long request on a live gateway
        await dead.admit(who, 0, hold=True)  # a request on a gateway that then crashed
        with pytest.raises(APIError) as full:
            await live.admit(who, 0, hold=True)
        assert full.value.status == 429

        async def admitted() -> bool:
            try:
                await live.admit(who, 0, hold=True)
            except APIError:
                return False
            return True

        await eventually(admitted, timeout=6)  # the dead gateway's slot came back within about a lease
        freed_after = time.time() - started
        slots = f"{prefix}par:{who.key_id}"

        async def renewed_past_lease() -> bool:
            score = await live_client.zscore(slots, kept.parallel_member)
            return score is not None and score / 1000 > started + 3  # two leases on, still renewed

        await eventually(renewed_past_lease, timeout=8)
        with pytest.raises(APIError):  # the live request still holds its slot, with the third
            await live.admit(who, 0, hold=True)
        assert freed_after < 4.5, freed_after
        renewals.cancel()
        await live.settle(who, kept, 0)
        await live_client.aclose()
        await dead_client.aclose()

    asyncio.run(scenario())


# Finding 13: a Redis restart without data reset every budget window.


def test_a_budget_spent_before_redis_lost_its_keys_is_still_spent(pair: Pair) -> None:
    made = pair.key(max_budget=0.01)  # two requests of max_tokens 20
    admitted = 0
    for i in range(6):
        resp = pair.chat((pair.a, pair.b)[i % 2], made["key"], max_tokens=20)
        assert resp.status_code in (200, 429), resp.text
        admitted += resp.status_code == 200
    assert admitted >= 1
    assert pair.chat(pair.a, made["key"], max_tokens=20).status_code == 429
    wait_for(lambda: pair.spend(made["id"])["requests"] >= admitted, timeout=15, what="spend records")
    r = redis.Redis.from_url(pair.redis_url)
    lost = [k for pattern in ("spend:*", "budget:*") for k in r.scan_iter(f"{pair.prefix}{pattern}")]
    assert lost and r.delete(*lost) == len(lost)  # Redis came back without its data
    for url in (pair.a, pair.b):
        resp = pair.chat(url, made["key"], max_tokens=20)
        assert resp.status_code == 429, resp.text
        assert resp.json()["error"]["code"] == "insufficient_quota"


# The attacker's review of finding 4: a list of prompts paid for one answer; counts sent as floats were
# not counted; the prompt's characters ÷ 4 estimate was reserved, and concurrent requests added its error.


def _complete(pair: Pair, key: str, **body: Any) -> httpx.Response:
    payload = {"model": CHAT, "ignore_eos": True, **body}
    return httpx.post(f"{pair.a}/v1/completions", json=payload, headers=bearer(key), timeout=30)


def test_a_list_of_prompts_pays_for_an_answer_per_prompt(pair: Pair) -> None:
    budget = 0.05  # 250 completion tokens at this model's price
    made = pair.key(max_budget=budget)
    refused = _complete(pair, made["key"], prompt=["hi"] * 20, max_tokens=16)  # 20 answers of 16: $0.064
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "insufficient_quota", refused.text
    many = _complete(pair, made["key"], prompt=["hi"] * 10, n=8, max_tokens=8)  # 80 answers: $0.128
    assert many.status_code == 429, many.text
    capped = _complete(pair, made["key"], prompt=["hi"] * 20)  # no max_tokens: what the budget pays, per answer
    assert capped.status_code == 200, capped.text
    given = int(capped.headers["x-iir-max-tokens"])
    assert 1 <= given <= 12 and len(capped.json()["choices"]) == 20
    assert capped.json()["usage"]["completion_tokens"] <= 20 * given
    wait_for(lambda: pair.spend(made["id"])["requests"] >= 1, timeout=15, what="the spend record")
    assert pair.spend(made["id"])["cost"] <= budget
    # TPM reserves the same answers: 100 prompts × 16 tokens do not fit a 1,000 TPM key.
    tpm = pair.key(tpm_limit=1000)
    too_large = _complete(pair, tpm["key"], prompt=["hi"] * 100, max_tokens=16)
    assert too_large.status_code == 429 and "too large" in too_large.json()["error"]["message"], too_large.text


def test_counts_sent_as_floats_are_reserved_and_forwarded_as_integers(pair: Pair) -> None:
    made = pair.key(max_budget=0.01)  # 50 completion tokens at this model's price
    for body in ({"max_completion_tokens": 4000.0}, {"max_tokens": 4000.0}, {"n": 8.0, "max_tokens": 10}):
        resp = pair.chat(pair.a, made["key"], ignore_eos=True, **body)
        assert resp.status_code == 429 and resp.json()["error"]["code"] == "insufficient_quota", (body, resp.text)
    eight = pair.chat(pair.b, made["key"], n=8.0, max_tokens=2, ignore_eos=True)  # the upstream read n=8
    assert eight.status_code == 200 and len(eight.json()["choices"]) == 8, eight.text
    half = pair.chat(pair.b, made["key"], n=8.5, max_tokens=2)
    assert half.status_code == 400 and half.json()["error"]["param"] == "n", half.text
    wait_for(lambda: pair.spend(made["id"])["requests"] >= 1, timeout=15, what="the spend record")
    assert pair.spend(made["id"])["cost"] <= 0.01


def test_concurrent_prompts_the_estimate_undercounts_stay_within_the_budget(pair: Pair) -> None:
    budget = 5.0
    made = pair.key(max_budget=budget)
    # 11,000 characters, estimated at 2,754 tokens; the simulator counts 1.3 a word: 7,150 ($0.715).
    text = "a " * 5500

    async def wave() -> list[int]:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=50)) as client:
            answers = await asyncio.gather(
                *(
                    client.post(
                        f"{(pair.a, pair.b)[i % 2]}/v1/chat/completions",
                        json={"model": CHAT, "messages": [{"role": "user", "content": text}], "max_tokens": 1},
                        headers=bearer(made["key"]),
                    )
                    for i in range(40)
                )
            )
        return [a.status_code for a in answers]

    codes = asyncio.run(wave())
    assert set(codes) == {200, 429}, codes
    wait_for(lambda: pair.spend(made["id"])["requests"] >= codes.count(200), timeout=15, what="spend records")
    spent = pair.spend(made["id"])["cost"]
    print(f"budget ${budget}: {codes.count(200)} of 40 admitted, spent ${spent:.4f}")
    assert spent <= budget, spent  # before: $12.87


def test_a_decoy_field_does_not_hide_the_prompt_from_the_budget(pair: Pair) -> None:
    """Found by a second review: `messages: []` beside a completions `prompt`, or `prompt: ""` beside an
    embeddings `input`, made the bound read the empty field (78× and 5,850× a budget in one request)."""
    money = pair.key(max_budget=0.01)
    decoys: tuple[dict[str, Any], ...] = ({"messages": []}, {"input": ""})
    for decoy in decoys:
        resp = _complete(pair, money["key"], prompt="a " * 6000, max_tokens=1, **decoy)
        assert resp.status_code == 429 and resp.json()["error"]["code"] == "insufficient_quota", (decoy, resp.text)
    tokens = pair.key(budget_tokens=100)
    for decoy in ({"prompt": ""}, {"messages": []}):
        body = {"model": f"local/{EMBEDDER}", "input": ["a " * 300] * 5, **decoy}
        resp = httpx.post(f"{pair.a}/v1/embeddings", json=body, headers=bearer(tokens["key"]), timeout=30)
        assert resp.status_code == 429 and resp.json()["error"]["code"] == "insufficient_quota", (decoy, resp.text)
    # best_of: the candidates generated, not the answers returned, are what is paid for.
    best = _complete(pair, money["key"], prompt="hi", n=1, best_of=8, max_tokens=10)
    assert best.status_code == 429, best.text
