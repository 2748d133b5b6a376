"""Per-key requests-per-minute, tokens-per-minute and token budgets, enforced atomically in Redis.

Each limit is a token bucket holding up to `limit × burst`, refilled at `limit` per minute. Admission
is one Lua call that checks every bucket and the budget and takes a request and the estimated tokens
(from the bucket and the budget alike) only if all allow it, so concurrent requests on any number of
gateway replicas are counted exactly; a request estimated above the bucket is refused outright. When the
answer ends, `settle` (once per request) gives back the unused estimate or takes the excess, in the
bucket (which may go into debt, kept until refilled) and in the budget of the current day or month.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from iir_gateway.errors import APIError
from iir_gateway.metrics import GatewayMetrics
from iir_gateway.principal import Principal

log = logging.getLogger(__name__)

# Buckets may go below zero (a request that used more than it reserved): that debt is kept until the
# refill pays it, so a key expires only once its bucket would be full again.
_LEVEL = """
local function level(key, limit, cap, now)
  if limit <= 0 then return nil, 0 end
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

_ADMIT = (
    _LEVEL
    + """
local now = tonumber(ARGV[1])
local rpm, rpm_cap, tpm, tpm_cap = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local cost, budget, budget_ttl = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local r, r_rate = level(KEYS[1], rpm, rpm_cap, now)
local t, t_rate = level(KEYS[2], tpm, tpm_cap, now)
local used = 0
if budget > 0 then used = tonumber(redis.call('GET', KEYS[3]) or '0') end
local reason, wait = '', 0
if t ~= nil and cost > tpm_cap then reason, wait = 'too_large', -1 end
if reason == '' and budget > 0 and used >= budget then reason, wait = 'budget', -1 end
if reason == '' and r ~= nil and r < 1 then reason, wait = 'requests', math.ceil((1 - r) / r_rate) end
if reason == '' and t ~= nil and t < cost then reason, wait = 'tokens', math.ceil((cost - t) / t_rate) end
if reason ~= '' then
  return {0, reason, wait, math.floor(r or 0), math.floor(t or 0), used}
end
if r ~= nil then
  r = r - 1
  store(KEYS[1], r, rpm_cap, r_rate, now)
end
if t ~= nil then
  t = t - cost
  store(KEYS[2], t, tpm_cap, t_rate, now)
end
if budget > 0 and cost > 0 then
  used = redis.call('INCRBY', KEYS[3], cost)
  redis.call('EXPIRE', KEYS[3], budget_ttl)
end
return {1, '', 0, math.floor(r or 0), math.floor(t or 0), used}
"""
)

# The reservation was the estimate; the answer used `actual`: the bucket and the budget take the difference.
_SETTLE = (
    _LEVEL
    + """
local now, tpm, tpm_cap, refund = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if tpm > 0 then
  local t, rate = level(KEYS[1], tpm, tpm_cap, now)
  store(KEYS[1], math.min(tpm_cap, t + refund), tpm_cap, rate, now)
end
local budget_ttl = tonumber(ARGV[5])
if budget_ttl > 0 and refund ~= 0 then
  redis.call('INCRBY', KEYS[2], -refund)
  redis.call('EXPIRE', KEYS[2], budget_ttl)
end
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
class Admission:
    """What was reserved, and the `x-ratelimit-*` headers to put on the response."""

    reserved_tokens: int
    headers: dict[str, str]


NO_LIMITS = Admission(0, {})


def _period(period: str, now: datetime) -> tuple[str, int]:
    """The budget counter's suffix and a TTL covering the rest of the period."""
    if period == "day":
        return now.strftime("%Y-%m-%d"), 2 * 86400
    return now.strftime("%Y-%m"), 32 * 86400


class RateLimiter:
    def __init__(
        self, redis: aioredis.Redis, metrics: GatewayMetrics, prefix: str = "iir:", burst: float = 1.0
    ) -> None:
        self.redis = redis
        self.metrics = metrics
        self.prefix = prefix
        self.burst = burst
        self._admit = redis.register_script(_ADMIT)
        self._settle = redis.register_script(_SETTLE)

    def _keys(self, p: Principal, now: datetime) -> list[str]:
        base = f"{self.prefix}rl:{p.key_id}"
        suffix, _ = _period(p.budget_period, now)
        return [f"{base}:rpm", f"{base}:tpm", f"{self.prefix}budget:{p.key_id}:{suffix}"]

    def _headers(self, p: Principal, remaining_requests: int, remaining_tokens: int) -> dict[str, str]:
        headers = {}
        for kind, limit, left in (
            ("requests", p.rpm_limit, remaining_requests),
            ("tokens", p.tpm_limit, remaining_tokens),
        ):
            if limit > 0:
                cap = limit * self.burst
                headers[f"x-ratelimit-limit-{kind}"] = str(limit)
                headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, left))
                headers[f"x-ratelimit-reset-{kind}"] = duration((cap - max(0, left)) * 60000 / limit)
        return headers

    async def admit(self, p: Principal, estimated_tokens: int, count_request: bool = True) -> Admission:
        """Takes one request (unless `count_request` is False: a job counted when it was queued) and
        `estimated_tokens` from the key's buckets and budget, or raises a 429."""
        if not p.limited:
            return NO_LIMITS
        now = datetime.now(UTC)
        rpm = p.rpm_limit if count_request else 0
        try:
            allowed, reason, wait_ms, r_left, t_left, used = await self._admit(
                keys=self._keys(p, now),
                args=[
                    int(time.time() * 1000),
                    rpm,
                    rpm * self.burst,
                    p.tpm_limit,
                    p.tpm_limit * self.burst,
                    estimated_tokens,
                    p.budget_tokens,
                    _period(p.budget_period, now)[1],
                ],
            )
        except RedisError as exc:  # fail open: an outage of Redis must not stop inference
            self.metrics.ratelimit_errors.inc()
            log.warning("rate limiting skipped: Redis failed", extra={"error": repr(exc)[:200]})
            return NO_LIMITS
        headers = self._headers(p if count_request else dataclasses.replace(p, rpm_limit=0), int(r_left), int(t_left))
        if allowed:
            return Admission(estimated_tokens if p.tpm_limit > 0 or p.budget_tokens > 0 else 0, headers)
        kind = reason.decode() if isinstance(reason, bytes) else str(reason)
        self.metrics.rate_limited.labels(kind).inc()
        if kind == "too_large":
            raise APIError(
                429,
                f"Request too large for tokens per minute: limit {p.tpm_limit}, requested "
                f"{estimated_tokens} (prompt estimate plus max_tokens). Send less, or a smaller "
                "max_tokens.",
                type="tokens",
                code="rate_limit_exceeded",
                param="max_tokens",
                headers=headers,
            )
        if kind == "budget":
            raise APIError(
                429,
                f"This key has used its token budget for the {p.budget_period} ({used}/{p.budget_tokens} tokens).",
                type="insufficient_quota",
                code="insufficient_quota",
                headers=headers,
            )
        retry_s = max(1, math.ceil(int(wait_ms) / 1000))
        limit = p.rpm_limit if kind == "requests" else p.tpm_limit
        raise APIError(
            429,
            f"Rate limit reached for {kind} per minute: limit {limit}. Please try again in {retry_s}s.",
            type=kind,
            code="rate_limit_exceeded",
            headers={**headers, "retry-after": str(retry_s)},
        )

    async def settle(self, p: Principal, reserved: int, actual: int) -> None:
        """Corrects the token bucket by what the response really used, and adds it to the budget."""
        if not p.limited or (p.tpm_limit <= 0 and p.budget_tokens <= 0):
            return
        now = datetime.now(UTC)
        keys = self._keys(p, now)
        _, budget_ttl = _period(p.budget_period, now)
        try:
            await self._settle(
                keys=[keys[1], keys[2]],
                args=[
                    int(time.time() * 1000),
                    p.tpm_limit,
                    p.tpm_limit * self.burst,
                    reserved - actual,
                    budget_ttl if p.budget_tokens > 0 else 0,
                ],
            )
        except RedisError as exc:
            self.metrics.ratelimit_errors.inc()
            log.warning("cannot settle token usage: Redis failed", extra={"error": repr(exc)[:200]})
