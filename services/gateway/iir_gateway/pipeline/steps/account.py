"""Step 7: what each request used and cost: one spend record per request (for spend queries and, in
the auth service, usage per key and model), and the per-model metrics: requests by status, tokens,
latency, money. A running stream's record is checkpointed (what it relayed so far), so a gateway crash
still bills it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import orjson

from iir.v1 import auth_pb2
from iir_gateway.accounting.cost import Prices, cached_tokens, request_cost
from iir_gateway.accounting.rate_limiter import NANO
from iir_gateway.metrics import GatewayMetrics
from iir_gateway.pipeline.context import RequestContext
from iir_gateway.pipeline.step import Step
from iir_gateway.pipeline.steps.dispatch import RELAY

_ID = "spend_id"  # ctx.state: the record's id and time, fixed when a stream is tracked
_AT = "spend_at_ms"


class SpendSink(Protocol):
    def record(self, record: auth_pb2.SpendRecord) -> None: ...

    def new_id(self) -> str: ...

    def track(self, record_id: str, snapshot: Callable[[], auth_pb2.SpendRecord | None]) -> None: ...

    def untrack(self, record_id: str) -> None: ...


def _labels(ctx: RequestContext) -> tuple[str, str]:
    """(model, provider) as bounded metric labels."""
    return ctx.served.labels() if ctx.served is not None else ("other", "other")


class Account(Step):
    name = "account"

    def __init__(self, spend: SpendSink, prices: Prices, metrics: GatewayMetrics) -> None:
        self.spend = spend
        self.prices = prices
        self.metrics = metrics

    async def before(self, ctx: RequestContext) -> None:
        if ctx.stream and ctx.principal is not None:
            record_id = ctx.state[_ID] = self.spend.new_id()
            ctx.state[_AT] = int(time.time() * 1000)
            self.spend.track(record_id, lambda: self._checkpoint(ctx))

    def _checkpoint(self, ctx: RequestContext) -> auth_pb2.SpendRecord | None:
        """The record of a running stream as if it ended now: what it relayed so far."""
        relay = ctx.state.get(RELAY)
        if relay is None or ctx.status != 200:
            return None  # no answer yet: nothing generated
        prompt = ctx.token_counts()[0]
        completion = int(getattr(relay, "text_events", 0))
        _, provider = _labels(ctx)
        cost = self.prices.price(ctx.answered_by or ctx.model).cost_nano(prompt, 0, completion)
        return self._record(ctx, provider, prompt, completion, cost)

    def _record(
        self, ctx: RequestContext, provider: str, prompt: int, completion: int, cost: int
    ) -> auth_pb2.SpendRecord:
        p = ctx.principal
        assert p is not None
        body = ctx.body
        user = body.get("user")
        tags = body.get("metadata")
        return auth_pb2.SpendRecord(
            record_id=ctx.state.get(_ID) or self.spend.new_id(),
            at_ms=ctx.state.get(_AT) or int(time.time() * 1000),
            request_id=ctx.request_id,
            key_id=p.key_id,
            user_id=p.user_id,
            team_id=p.team_id,
            model=ctx.model,
            answered_by=ctx.answered_by or ctx.model,
            provider=provider,
            prompt_tokens=prompt,
            cached_tokens=cached_tokens(ctx.usage),
            completion_tokens=completion,
            cost=cost / NANO,
            latency_ms=(time.perf_counter() - ctx.started) * 1000,
            status=ctx.status,
            cache_hit=ctx.cache_hit,
            end_user=user if isinstance(user, str) else "",
            tags_json=orjson.dumps(tags).decode() if isinstance(tags, dict) else "",
            ttft_ms=ctx.ttft_s * 1000,
            target=ctx.target,
            fallbacks=ctx.tried,
            error_code=ctx.error_code,
            operation=ctx.operation,
            stream=ctx.stream,
        )

    def _spend(self, ctx: RequestContext, provider: str, prompt: int, completion: int, cost: int) -> None:
        self.spend.record(self._record(ctx, provider, prompt, completion, cost))

    def on_complete(self, ctx: RequestContext) -> None:
        m = self.metrics
        model_label, provider_label = _labels(ctx)
        m.model_requests.labels(model_label, provider_label, str(ctx.status)).inc()
        if ctx.principal is None:
            return
        if _ID in ctx.state:
            self.spend.untrack(ctx.state[_ID])
        if ctx.status != 200:
            self._spend(ctx, provider_label, 0, 0, 0)
            return
        prompt, completion = ctx.token_counts()
        cost = request_cost(ctx, self.prices)
        self._spend(ctx, provider_label, prompt, completion, cost)
        if cost:
            m.spend.labels(m.team_label(ctx.principal.team_name), model_label).inc(cost / NANO)
        key_id = ctx.principal.key_id
        m.tokens.labels(model_label, "prompt").inc(prompt)
        m.tokens.labels(model_label, "completion").inc(completion)
        key = m.key_label(key_id or "static")
        m.key_tokens.labels(key, "prompt").inc(prompt)
        m.key_tokens.labels(key, "completion").inc(completion)
        m.model_latency.labels(model_label, provider_label).observe(time.perf_counter() - ctx.started)
