"""Limits and budgets of a key, its user and its team, enforced atomically in Redis across every gateway.

Each requests-per-minute and tokens-per-minute limit is a token bucket holding up to `limit × burst`,
refilled at `limit` per minute. Budgets (the key's tokens; money for the key, its user and its team) are
counters per window (`iir_common.budget_window`). Admission is one Lua call that checks every bucket,
budget and the key's parallel-requests set, and takes a request, the estimated tokens and the estimated
cost from all of them only if all allow it, so concurrent requests on any number of gateway replicas are
counted exactly: a budget is overshot by at most the requests admitted while it still had room. When the
answer ends, `settle` (once per request) gives back the unused estimate or takes the excess, and frees
the request's parallel slot.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from iir_common.budget_window import Window, window
from iir_gateway.errors import APIError
from iir_gateway.metrics import GatewayMetrics
from iir_gateway.principal import Principal, Scope

log = logging.getLogger(__name__)

NANO = 1_000_000_000  # money is counted in nano-USD, integers in Redis

# Buckets may go below zero (a request that used more than it reserved): that debt is kept until the
# refill pays it, so a key expires only once its bucket would be full again.
_LEVEL = """
local function level(key, limit, cap, now)
  local rate = limit / 60000.0
  local v = redis.call('HMGET', key, 't', 'ts')
  local tokens, ts = tonumber(v[1]), tonumber(v[2])
  if tokens == nil then tokens, ts = cap, now end
  return math.min(cap, tokens + math.max(0, now - ts) * rate), rate
end
local function store(key, tokens, cap, rate, now)
  redis.call('HSET', key, 't', tostring(tokens), 'ts', now)
  redis.call('PEXPIRE', key, math.ceil((cap - tokens) / rate) + 60000)
end
"""

# KEYS: buckets, budgets, then the parallel set (if any). ARGV: now, counts, then per bucket (limit, cap,
# cost), per budget (max, ttl, cost), and the parallel (max, member, lease). Answers
# {allowed, index of what refused (1-based), wait ms or -1, budget used, bucket levels...}.
_ADMIT = (
    _LEVEL
    + """
local now, nb, ng, np = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local b, levels = {}, {}
local a = 5
for i = 1, nb do
  local limit, cap, cost = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  local lv, rate = level(KEYS[i], limit, cap, now)
  b[i] = {lv, rate, cap, cost}
  levels[i] = math.floor(lv)
  if cost > cap then return {0, i, -1, 0, unpack(levels)} end
end
local g = {}
for j = 1, ng do
  local max, ttl, cost = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  local used = tonumber(redis.call('GET', KEYS[nb + j]) or '0')
  g[j] = {ttl, cost}
  if used >= max then return {0, nb + j, -1, used, unpack(levels)} end
end
for i = 1, nb do
  local lv, rate, cap, cost = b[i][1], b[i][2], b[i][3], b[i][4]
  if lv < cost then return {0, i, math.ceil((cost - lv) / rate), 0, unpack(levels)} end
end
if np > 0 then
  local max, member, lease = tonumber(ARGV[a]), ARGV[a + 1], tonumber(ARGV[a + 2])
  local set = KEYS[nb + ng + 1]
  redis.call('ZREMRANGEBYSCORE', set, '-inf', now - lease)
  if redis.call('ZCARD', set) >= max then return {0, nb + ng + 1, 1000, 0, unpack(levels)} end
  redis.call('ZADD', set, now, member)
  redis.call('PEXPIRE', set, lease)
end
for i = 1, nb do
  local lv, rate, cap, cost = b[i][1], b[i][2], b[i][3], b[i][4]
  if cost > 0 then
    store(KEYS[i], lv - cost, cap, rate, now)
    levels[i] = math.floor(lv - cost)
  end
end
for j = 1, ng do
  if g[j][2] > 0 then
    redis.call('INCRBY', KEYS[nb + j], g[j][2])
    redis.call('EXPIRE', KEYS[nb + j], g[j][1])
  end
end
return {1, 0, 0, 0, unpack(levels)}
"""
)

# The reservation was the estimate; the answer used what it used: buckets and budgets take the difference,
# and the parallel slot is freed. ARGV: now, counts, per bucket (limit, cap, refund), per budget (ttl,
# refund), the parallel member.
_SETTLE = (
    _LEVEL
    + """
local now, nb, ng, np = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local a = 5
for i = 1, nb do
  local limit, cap, refund = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  if refund ~= 0 then
    local t, rate = level(KEYS[i], limit, cap, now)
    store(KEYS[i], math.min(cap, t + refund), cap, rate, now)
  end
end
for j = 1, ng do
  local ttl, refund = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  a = a + 2
  if refund ~= 0 then
    redis.call('INCRBY', KEYS[nb + j], -refund)
    redis.call('EXPIRE', KEYS[nb + j], ttl)
  end
end
if np > 0 then redis.call('ZREM', KEYS[nb + ng + 1], ARGV[a]) end
return 1
"""
)


def duration(ms: float) -> str:
    """OpenAI's reset format: `120ms`, `1s`, `6m0s`, `1h2m3s`."""
    if ms < 1000:
        return f"{max(0, math.ceil(ms))}ms"
    seconds = math.ceil(ms / 1000)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


@dataclass(frozen=True, slots=True)
class Bucket:
    """A per-minute limit of one scope: what it counts ("requests" or "tokens"), whose, and the cost."""

    kind: str
    scope: Scope
    limit: int
    cost: int


@dataclass(frozen=True, slots=True)
class Budget:
    """A budget of one scope in its current window: "tokens" (the key's) or "money" (nano-USD)."""

    kind: str
    scope: Scope
    limit: int
    window: Window
    cost: int


@dataclass(slots=True)
class Admission:
    """What was reserved, the `x-ratelimit-*` headers to put on the response, and what settling needs."""

    reserved_tokens: int
    headers: dict[str, str]
    reserved_cost: int = 0  # nano-USD
    buckets: list[Bucket] = field(default_factory=list)
    budgets: list[Budget] = field(default_factory=list)
    parallel_member: str = ""

    @property
    def holds_anything(self) -> bool:
        return bool(self.reserved_tokens or self.budgets or self.parallel_member)


NO_LIMITS = Admission(0, {})


def _scope_text(scope: Scope) -> str:
    return {"key": "this key", "user": f"user {scope.name}", "team": f"team {scope.name}"}.get(scope.kind, scope.kind)


class RateLimiter:
    def __init__(
        self,
        redis: aioredis.Redis,
        metrics: GatewayMetrics,
        prefix: str = "iir:",
        burst: float = 1.0,
        parallel_lease_s: float = 900.0,
    ) -> None:
        self.redis = redis
        self.metrics = metrics
        self.prefix = prefix
        self.burst = burst
        self.parallel_lease_ms = int(parallel_lease_s * 1000)
        self._admit = redis.register_script(_ADMIT)
        self._settle = redis.register_script(_SETTLE)

    def _bucket_key(self, b: Bucket) -> str:
        who = b.scope.id if b.scope.kind == "key" else f"{b.scope.kind}:{b.scope.id}"
        return f"{self.prefix}rl:{who}:{'rpm' if b.kind == 'requests' else 'tpm'}"

    def _budget_key(self, g: Budget) -> str:
        if g.kind == "tokens":
            return f"{self.prefix}budget:{g.scope.id}:{g.window.name}"
        return f"{self.prefix}spend:{g.scope.kind}:{g.scope.id}:{g.window.name}"

    def _plan(
        self, p: Principal, tokens: int, cost: int, count_request: bool, now: float
    ) -> tuple[list[Bucket], list[Budget]]:
        buckets, budgets = [], []
        for scope in p.scopes:
            if scope.rpm_limit > 0 and count_request:
                buckets.append(Bucket("requests", scope, scope.rpm_limit, 1))
            if scope.tpm_limit > 0:
                buckets.append(Bucket("tokens", scope, scope.tpm_limit, tokens))
            if scope.max_budget > 0:
                limit = math.ceil(scope.max_budget * NANO)
                budgets.append(Budget("money", scope, limit, window(scope.budget_duration, now), cost))
        if p.budget_tokens > 0:
            budgets.append(Budget("tokens", p.scopes[0], p.budget_tokens, window(p.budget_period, now), tokens))
        return buckets, budgets

    def _headers(self, p: Principal, buckets: list[Bucket], levels: list[int]) -> dict[str, str]:
        """OpenAI's headers, for the key's own limits."""
        headers = {}
        for b, left in zip(buckets, levels, strict=False):
            if b.scope.kind != "key":
                continue
            cap = b.limit * self.burst
            headers[f"x-ratelimit-limit-{b.kind}"] = str(b.limit)
            headers[f"x-ratelimit-remaining-{b.kind}"] = str(max(0, left))
            headers[f"x-ratelimit-reset-{b.kind}"] = duration((cap - max(0, left)) * 60000 / b.limit)
        return headers

    async def admit(
        self,
        p: Principal,
        estimated_tokens: int,
        count_request: bool = True,
        estimated_cost: int = 0,
        hold: bool = False,
    ) -> Admission:
        """Takes one request (unless `count_request` is False: a job counted when it was queued),
        `estimated_tokens` and `estimated_cost` (nano-USD) from the buckets and budgets of the key, its user
        and team, and (with `hold`) one of the key's parallel slots; or raises a 429."""
        if not p.limited:
            return NO_LIMITS
        now = time.time()
        now_ms = int(now * 1000)
        buckets, budgets = self._plan(p, estimated_tokens, estimated_cost, count_request, now)
        parallel = hold and p.max_parallel_requests > 0
        member = f"{now_ms}-{secrets.token_hex(6)}" if parallel else ""
        keys = [self._bucket_key(b) for b in buckets] + [self._budget_key(g) for g in budgets]
        args: list[int | float | str] = [now_ms, len(buckets), len(budgets), int(parallel)]
        for b in buckets:
            args += [b.limit, b.limit * self.burst, b.cost]
        for g in budgets:
            args += [g.limit, g.window.ttl_s(now), g.cost]
        if parallel:
            keys.append(f"{self.prefix}par:{p.key_id}")
            args += [p.max_parallel_requests, member, self.parallel_lease_ms]
        if not keys:
            return NO_LIMITS
        try:
            reply = await self._admit(keys=keys, args=args)
        except RedisError as exc:  # fail open: an outage of Redis must not stop inference
            self.metrics.ratelimit_errors.inc()
            log.warning("rate limiting skipped: Redis failed", extra={"error": repr(exc)[:200]})
            return NO_LIMITS
        allowed, index, wait_ms, used = (int(v) for v in reply[:4])
        headers = self._headers(p, buckets, [int(v) for v in reply[4:]])
        if allowed:
            return Admission(
                estimated_tokens
                if any(b.kind == "tokens" for b in buckets) or any(g.kind == "tokens" for g in budgets)
                else 0,
                headers,
                estimated_cost if budgets else 0,
                buckets,
                budgets,
                member,
            )
        if index <= len(buckets):
            self._refuse_bucket(buckets[index - 1], estimated_tokens, wait_ms, headers)
        if index <= len(buckets) + len(budgets):
            self._refuse_budget(budgets[index - len(buckets) - 1], used, now, headers)
        self.metrics.rate_limited.labels("parallel").inc()
        raise APIError(
            429,
            f"This key has {p.max_parallel_requests} requests running, its most at once; try again when one ends.",
            type="requests",
            code="rate_limit_exceeded",
            headers={**headers, "retry-after": "1"},
        )

    def _refuse_bucket(self, b: Bucket, estimated_tokens: int, wait_ms: int, headers: dict[str, str]) -> None:
        whose = _scope_text(b.scope)
        if wait_ms < 0:
            self.metrics.rate_limited.labels("too_large").inc()
            raise APIError(
                429,
                f"Request too large for tokens per minute of {whose}: limit {b.limit}, requested "
                f"{estimated_tokens} (prompt estimate plus max_tokens). Send less, or a smaller max_tokens.",
                type="tokens",
                code="rate_limit_exceeded",
                param="max_tokens",
                headers=headers,
            )
        self.metrics.rate_limited.labels(b.kind).inc()
        retry_s = max(1, math.ceil(wait_ms / 1000))
        raise APIError(
            429,
            f"Rate limit reached for {b.kind} per minute of {whose}: limit {b.limit}. Please try again in {retry_s}s.",
            type=b.kind,
            code="rate_limit_exceeded",
            headers={**headers, "retry-after": str(retry_s)},
        )

    def _refuse_budget(self, g: Budget, used: int, now: float, headers: dict[str, str]) -> None:
        self.metrics.rate_limited.labels("budget").inc()
        resets = g.window.ends_at
        extra = dict(headers)
        until = ""
        if resets < 2**62:
            extra["retry-after"] = str(max(1, math.ceil(resets - now)))
            extra["x-ratelimit-reset-budget"] = str(resets)
            until = f" It resets at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(resets))}."
        if g.kind == "tokens":
            spent = f"({used}/{g.limit} tokens)"
        else:
            spent = f"(${used / NANO:.6g} of ${g.limit / NANO:.6g})"
        raise APIError(
            429,
            f"The budget of {_scope_text(g.scope)} is used up {spent}.{until}",
            type="insufficient_quota",
            code="insufficient_quota",
            headers=extra,
        )

    async def settle(self, p: Principal, admission: Admission, actual_tokens: int, actual_cost: int = 0) -> None:
        """Corrects buckets and budgets by what the response really used, and frees its parallel slot."""
        if not admission.holds_anything:
            return
        now = time.time()
        tokens_back = admission.reserved_tokens - actual_tokens
        cost_back = admission.reserved_cost - actual_cost
        keys: list[str] = []
        args: list[int | float | str] = [
            int(now * 1000),
            len(admission.buckets),
            len(admission.budgets),
            int(bool(admission.parallel_member)),
        ]
        for b in admission.buckets:
            keys.append(self._bucket_key(b))
            args += [b.limit, b.limit * self.burst, tokens_back if b.kind == "tokens" else 0]
        for g in admission.budgets:
            keys.append(self._budget_key(g))
            args += [g.window.ttl_s(now), tokens_back if g.kind == "tokens" else cost_back]
        if admission.parallel_member:
            keys.append(f"{self.prefix}par:{p.key_id}")
            args.append(admission.parallel_member)
        try:
            await self._settle(keys=keys, args=args)
        except RedisError as exc:
            self.metrics.ratelimit_errors.inc()
            log.warning("cannot settle usage: Redis failed", extra={"error": repr(exc)[:200]})
