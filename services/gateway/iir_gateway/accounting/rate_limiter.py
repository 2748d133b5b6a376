"""Limits and budgets of a key, its user and its team, enforced atomically in Redis across every gateway.

Each requests-per-minute and tokens-per-minute limit is a token bucket holding up to `limit × burst`,
refilled at `limit` per minute. Budgets (the key's tokens; money for the key, its user and its team) are
counters per window (`iir_common.budget_window`). Admission is one Lua call that checks every bucket,
budget and the key's parallel-requests set, and takes a request, the estimated tokens and the worst-case
cost from all of them only if all allow it. A budget admits a request only when its worst case (the
prompt's bound for text, its UTF-8 bytes, and every completion token of every answer it may generate)
fits in what is left; a request without `max_tokens` is granted as many completion tokens as every budget
can pay (the caller caps `max_tokens` at that). So concurrent requests on any number of gateway replicas
never spend past a budget on text (images and audio count at their estimate). When the answer ends,
`settle` (once per request) gives back the unused reservation or takes the excess, and frees the
request's parallel slot.

Budget windows are counted from the creation of the key, user or team (`Scope.created_at`). A budget
counter Redis does not have (a new window, or Redis lost its data) is seeded once from the spend log
(`SpendHistory`), from the same window start, before the request is admitted. With `alerts`, a money budget
that reached one of its scope's alert thresholds (after a settlement, or when it refuses a request it has
too little left for) is handed to `BudgetAlerts`, which tells the webhook off the request path.

Parallel slots are leases renewed by their gateway every third of `parallel_lease_s`: a dead gateway's
slots free within one lease. When Redis fails, keys with limits are refused (503) or counted in this
process (`LocalLimits`), as `on_redis_error` says.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from iir_common.budget_window import window
from iir_common.single_flight import SingleFlight
from iir_gateway.accounting.admission import (
    NANO,
    NO_LIMITS,
    Admission,
    Bucket,
    Budget,
    BudgetAsk,
    SpendSource,
    duration,
)
from iir_gateway.accounting.budget_alerts import BudgetAlerts
from iir_gateway.accounting.limit_scripts import ADMIT, SETTLE
from iir_gateway.accounting.local_limits import LocalLimits
from iir_gateway.errors import APIError
from iir_gateway.metrics import GatewayMetrics
from iir_gateway.principal import Principal, Scope

__all__ = ["NANO", "NO_LIMITS", "Admission", "BudgetAsk", "RateLimiter"]

log = logging.getLogger(__name__)


def _scope_text(scope: Scope) -> str:
    return {"key": "this key", "user": f"user {scope.name}", "team": f"team {scope.name}"}.get(scope.kind, scope.kind)


def _money(nano: float) -> str:
    return f"${max(0.0, nano) / NANO:.6g}"


class RateLimiter:
    def __init__(
        self,
        redis: aioredis.Redis,
        metrics: GatewayMetrics,
        prefix: str = "iir:",
        burst: float = 1.0,
        parallel_lease_s: float = 30.0,
        on_redis_error: str = "closed",
        history: SpendSource | None = None,
        max_hold_s: float = 900.0,
        alerts: BudgetAlerts | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.metrics = metrics
        self.prefix = prefix
        self.burst = burst
        self.parallel_lease_ms = int(parallel_lease_s * 1000)
        self.max_hold_ms = int(max_hold_s * 1000)  # no request runs longer: its slot is not renewed past it
        self.on_redis_error = on_redis_error
        self.history = history
        self.alerts = alerts
        self.clock = clock  # Unix seconds: which budget window a request falls in (tests move it)
        self.local = LocalLimits()
        self._admit = redis.register_script(ADMIT)
        self._settle = redis.register_script(SETTLE)
        self._live: dict[str, set[str]] = {}  # parallel set → members of requests running here
        self._seeding: SingleFlight[str, None] = SingleFlight()  # budget counter → its lookup in flight
        self._degraded_since = 0.0
        self._last_warning = 0.0

    # Keys

    def _bucket_key(self, b: Bucket) -> str:
        who = b.scope.id if b.scope.kind == "key" else f"{b.scope.kind}:{b.scope.id}"
        return f"{self.prefix}rl:{who}:{'rpm' if b.kind == 'requests' else 'tpm'}"

    def _budget_key(self, g: Budget) -> str:
        if g.kind == "tokens":
            return f"{self.prefix}budget:{g.scope.id}:{g.window.name}"
        return f"{self.prefix}spend:{g.scope.kind}:{g.scope.id}:{g.window.name}"

    def _parallel_key(self, p: Principal) -> str:
        return f"{self.prefix}par:{p.key_id}"

    def _plan(
        self, p: Principal, tokens: int, ask: BudgetAsk | None, count_request: bool, now: float
    ) -> tuple[list[Bucket], list[Budget]]:
        buckets, budgets = [], []
        ask = ask or BudgetAsk(tokens, 0, 0, 0.0)
        for scope in p.scopes:
            if scope.rpm_limit > 0 and count_request:
                buckets.append(Bucket("requests", scope, scope.rpm_limit, 1))
            if scope.tpm_limit > 0:
                buckets.append(Bucket("tokens", scope, scope.tpm_limit, tokens))
            if scope.max_budget > 0:
                limit = math.ceil(scope.max_budget * NANO)
                unit = ask.completion_price * ask.choices
                period = window(scope.budget_duration, now, scope.created_at)
                budgets.append(Budget("money", scope, limit, period, ask.prompt_cost, unit))
        if p.budget_tokens > 0:
            budgets.append(
                Budget(
                    "tokens",
                    p.scopes[0],
                    p.budget_tokens,
                    window(p.budget_period, now),
                    ask.prompt_tokens,
                    float(ask.choices),
                )
            )
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

    # Admission

    async def admit(
        self,
        p: Principal,
        estimated_tokens: int,
        count_request: bool = True,
        ask: BudgetAsk | None = None,
        hold: bool = False,
    ) -> Admission:
        """Takes one request (unless `count_request` is False: a job counted when it was queued),
        `estimated_tokens` from the token buckets, the worst case of `ask` from the budgets of the key, its
        user and team, and (with `hold`) one of the key's parallel slots; or raises a 429 (503 when Redis
        fails and limits are not counted locally)."""
        if not p.limited:
            return NO_LIMITS
        now = self.clock()
        now_ms = int(now * 1000)
        buckets, budgets = self._plan(p, estimated_tokens, ask, count_request, now)
        parallel = hold and p.max_parallel_requests > 0
        if not buckets and not budgets and not parallel:
            return NO_LIMITS
        member = f"{now_ms}-{secrets.token_hex(6)}" if parallel else ""
        want = ask.completion if ask is not None else 0
        least = min(want, 1) if ask is not None and ask.flexible else want
        keys = [self._bucket_key(b) for b in buckets] + [self._budget_key(g) for g in budgets]
        args: list[int | float | str] = [now_ms, len(buckets), len(budgets), int(parallel), want, least, 0]
        for b in buckets:
            args += [b.limit, b.limit * self.burst, b.cost]
        for g in budgets:
            args += [g.limit, g.window.ttl_s(now), g.fixed, g.unit]
        if parallel:
            keys.append(self._parallel_key(p))
            args += [p.max_parallel_requests, member, self.parallel_lease_ms]
        try:
            reply = await self._admit(keys=keys, args=args)
            if int(reply[0]) == 2:  # budget counters Redis does not have: seeded from the spend log
                await self._seed([budgets[int(j) - 1] for j in reply[5:]], now)
                args[6] = 1
                reply = await self._admit(keys=keys, args=args)
        except RedisError as exc:
            return self._without_redis(p, buckets, budgets, parallel, estimated_tokens, exc)
        allowed, index, wait_ms, used, granted = (int(v) for v in reply[:5])
        headers = self._headers(p, buckets, [int(v) for v in reply[5:]])
        if allowed:
            self._redis_answered()  # a refusal writes nothing: only an admission shows Redis takes writes
            if member:
                self._live.setdefault(keys[-1], set()).add(member)
            return Admission(
                estimated_tokens if any(b.kind == "tokens" for b in buckets) else 0,
                headers,
                ask.cost(granted) if ask is not None and any(g.kind == "money" for g in budgets) else 0,
                buckets,
                budgets,
                member,
                ask.tokens(granted) if ask is not None and any(g.kind == "tokens" for g in budgets) else 0,
                granted if budgets else None,
            )
        if index <= len(buckets):
            self._refuse_bucket(buckets[index - 1], estimated_tokens, wait_ms, headers)
        if index <= len(buckets) + len(budgets):
            self._refuse_budget(budgets[index - len(buckets) - 1], used, granted, ask, now, headers)
        self._refuse_parallel(p, headers)
        raise AssertionError("unreachable")

    async def _seed(self, budgets: list[Budget], now: float) -> None:
        """Sets each missing budget counter (unless another gateway did first) to what its scope spent in
        the window so far, by the spend log; 503 when the log cannot be read (the budget is unknown).
        Concurrent requests of this process wait on one lookup per counter."""
        for g in budgets:
            key = self._budget_key(g)
            await self._seeding.run(key, lambda g=g, key=key: self._seed_one(g, key, now))  # type: ignore[misc]

    async def _seed_one(self, g: Budget, key: str, now: float) -> None:
        spent = 0
        if self.history is not None:
            try:
                money, tokens = await self.history.spent_since(g.scope.kind, g.scope.id, g.window.starts_at)
            except Exception as exc:  # an RPC failure of any kind leaves the budget unknown
                log.warning(
                    "budget window not seeded: the spend log cannot be read",
                    extra={"scope": f"{g.scope.kind}:{g.scope.id}", "error": repr(exc)[:200]},
                )
                raise APIError(
                    503,
                    f"The budget of {_scope_text(g.scope)} cannot be checked now (its spend is being "
                    "recounted); try again in a few seconds.",
                    type="service_unavailable",
                    code="budget_unavailable",
                    headers={"retry-after": "2"},
                ) from exc
            spent = tokens if g.kind == "tokens" else money
        await self.redis.set(key, spent, ex=g.window.ttl_s(now), nx=True)
        log.info(
            "budget window seeded from the spend log",
            extra={"scope": f"{g.scope.kind}:{g.scope.id}", "window": g.window.name, "spent": spent},
        )

    # Redis failures

    def _redis_answered(self) -> None:
        if self._degraded_since:
            log.warning(
                "limits are checked in Redis again", extra={"degraded_s": round(time.time() - self._degraded_since, 1)}
            )
            self._degraded_since = 0.0
            self.metrics.limits_degraded.set(0)

    def _redis_failed(self, outcome: str, exc: Exception) -> None:
        self.metrics.ratelimit_errors.labels(outcome).inc()
        now = time.time()
        if not self._degraded_since:
            self._degraded_since = now
            self.metrics.limits_degraded.set(1)
        if now - self._last_warning >= 10 or self._degraded_since == now:
            self._last_warning = now
            what = {
                "refused": "keys with limits or budgets are refused (IIR_LIMITS_ON_REDIS_ERROR=closed)",
                "local": "limits are counted per gateway process, budgets refused (IIR_LIMITS_ON_REDIS_ERROR=local)",
            }.get(outcome, "a settlement is lost")
            log.error(f"limits: Redis failed; {what}", extra={"error": repr(exc)[:200]})

    def _without_redis(
        self,
        p: Principal,
        buckets: list[Bucket],
        budgets: list[Budget],
        parallel: bool,
        estimated_tokens: int,
        exc: RedisError,
    ) -> Admission:
        if self.on_redis_error != "local" or budgets:
            self._redis_failed("refused" if self.on_redis_error != "local" else "local", exc)
            what = "budget" if budgets else "limits"
            raise APIError(
                503,
                f"The {what} of this key cannot be checked now (the limits store is unavailable); try again shortly.",
                type="service_unavailable",
                code="limits_unavailable",
                headers={"retry-after": "1"},
            ) from exc
        self._redis_failed("local", exc)
        local = [(self._bucket_key(b), b.limit, b.limit * self.burst, b.cost) for b in buckets]
        index, wait_ms, levels = self.local.admit(local, p.key_id, p.max_parallel_requests if parallel else 0)
        headers = self._headers(p, buckets, levels)
        if index == 0:
            return Admission(
                estimated_tokens if any(b.kind == "tokens" for b in buckets) else 0,
                headers,
                buckets=buckets,
                parallel_member="local" if parallel else "",
                local=True,
            )
        if index <= len(buckets):
            self._refuse_bucket(buckets[index - 1], estimated_tokens, wait_ms, headers)
        self._refuse_parallel(p, headers)
        raise AssertionError("unreachable")

    # Refusals

    def _refuse_parallel(self, p: Principal, headers: dict[str, str]) -> None:
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

    def _refuse_budget(
        self, g: Budget, used: int, affordable: int, ask: BudgetAsk | None, now: float, headers: dict[str, str]
    ) -> None:
        self.metrics.rate_limited.labels("budget").inc()
        if self.alerts is not None and (affordable == 0 or used >= g.limit):
            self.alerts.reached(g, used, now, exhausted=True)  # not even the prompt and a token fit: used up
        resets = g.window.ends_at
        extra = dict(headers)
        until = ""
        if resets < 2**62:
            extra["retry-after"] = str(max(1, math.ceil(resets - now)))
            extra["x-ratelimit-reset-budget"] = str(resets)
            until = f" It resets at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(resets))}."

        def amount(v: float) -> str:
            return f"{max(0, int(v))} tokens" if g.kind == "tokens" else _money(v)

        left = g.limit - used
        if used >= g.limit or ask is None:
            message = f"The budget of {_scope_text(g.scope)} is used up ({amount(used)} of {amount(g.limit)})."
        else:
            worst = g.fixed + g.unit * ask.completion
            fits = f"at most {affordable}" if affordable > 0 else "none: the prompt alone costs more than is left"
            message = (
                f"The budget of {_scope_text(g.scope)} has {amount(left)} left of {amount(g.limit)}; this request "
                f"may use up to {amount(worst)} (its prompt and max_tokens {ask.completion}"
                f"{f' for each of {ask.choices} answers' if ask.choices > 1 else ''}). max_tokens that fits: {fits}."
            )
        raise APIError(
            429, f"{message}{until}", type="insufficient_quota", code="insufficient_quota", param=None, headers=extra
        )

    # Settling and leases

    async def settle(self, p: Principal, admission: Admission, actual_tokens: int, actual_cost: int = 0) -> None:
        """Corrects buckets and budgets by what the response really used, and frees its parallel slot."""
        if not admission.holds_anything:
            return
        tokens_back = admission.reserved_tokens - actual_tokens
        if admission.local:
            local = [
                (self._bucket_key(b), b.limit, b.limit * self.burst, tokens_back if b.kind == "tokens" else 0)
                for b in admission.buckets
            ]
            self.local.settle(local, p.key_id, bool(admission.parallel_member))
            return
        now = self.clock()
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
            back = (
                admission.budget_tokens - actual_tokens if g.kind == "tokens" else admission.reserved_cost - actual_cost
            )
            args += [g.window.ttl_s(now), back]
        if admission.parallel_member:
            par = self._parallel_key(p)
            keys.append(par)
            args.append(admission.parallel_member)
            members = self._live.get(par)
            if members is not None:
                members.discard(admission.parallel_member)
                if not members:
                    del self._live[par]
        try:
            used = await self._settle(keys=keys, args=args)
        except RedisError as exc:
            self._redis_failed("settle", exc)
            return
        if self.alerts is not None:
            for g, spent in zip(admission.budgets, used, strict=False):
                if int(spent) >= 0:
                    self.alerts.reached(g, int(spent), now)

    async def renew_leases(self) -> None:
        """Marks the parallel slots of every request running here as alive (one round trip): a slot whose
        gateway stops renewing it is taken back by the next admission after `parallel_lease_s`."""
        if not self._live:
            return
        now_ms = int(time.time() * 1000)
        pipe = self.redis.pipeline(transaction=False)
        for par, members in list(self._live.items()):
            # A member is "<admitted ms>-<random>": one held past any request's deadline was never settled.
            for stale in [m for m in members if now_ms - int(m.split("-", 1)[0]) > self.max_hold_ms]:
                members.discard(stale)
            if not members:
                del self._live[par]
                continue
            pipe.zadd(par, dict.fromkeys(members, now_ms), xx=True)  # a slot freed meanwhile stays freed
            pipe.pexpire(par, self.parallel_lease_ms)
        try:
            await pipe.execute()
        except RedisError as exc:
            log.warning("parallel slots not renewed: Redis failed", extra={"error": repr(exc)[:200]})

    async def run_renewals(self) -> None:
        """Renews the leases every third of a lease, until cancelled."""
        while True:
            await asyncio.sleep(self.parallel_lease_ms / 3000)
            try:
                await self.renew_leases()
            except Exception:  # the next round tries again; a dead task would leak every slot's lease
                log.exception("parallel slots not renewed")
