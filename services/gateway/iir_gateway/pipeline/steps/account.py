"""Step 7: what each request used and cost: usage per key and model, one spend record per request (for
spend queries), and the per-model metrics: requests by status, tokens, latency, money."""

from __future__ import annotations

import time
from typing import Protocol

import orjson

from iir.v1 import auth_pb2
from iir_gateway.limits.rate_limiter import NANO
from iir_gateway.metrics import GatewayMetrics
from iir_gateway.pipeline.context import RequestContext
from iir_gateway.pipeline.cost import Prices, cached_tokens, request_cost
from iir_gateway.pipeline.step import Step


class UsageSink(Protocol):
    def record(self, key_id: str, model: str, prompt_tokens: int, completion_tokens: int) -> None: ...


class SpendSink(Protocol):
    def record(self, record: auth_pb2.SpendRecord) -> None: ...


class ModelLabels(Protocol):
    def model_label(self, model: str) -> tuple[str, str]:
        """(model, provider) as bounded metric labels."""
        ...


class Account(Step):
    name = "account"

    def __init__(
        self, usage: UsageSink, spend: SpendSink, prices: Prices, labels: ModelLabels, metrics: GatewayMetrics
    ) -> None:
        self.usage = usage
        self.spend = spend
        self.prices = prices
        self.labels = labels
        self.metrics = metrics

    def _spend(self, ctx: RequestContext, provider: str, prompt: int, completion: int, cost: int) -> None:
        p = ctx.principal
        assert p is not None
        body = ctx.body
        user = body.get("user")
        tags = body.get("metadata")
        self.spend.record(
            auth_pb2.SpendRecord(
                at_ms=int(time.time() * 1000),
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
            )
        )

    def on_complete(self, ctx: RequestContext) -> None:
        m = self.metrics
        model_label, provider_label = self.labels.model_label(ctx.model)
        m.model_requests.labels(model_label, provider_label, str(ctx.status)).inc()
        if ctx.principal is None:
            return
        if ctx.status != 200:
            self._spend(ctx, provider_label, 0, 0, 0)
            return
        prompt, completion = ctx.token_counts()
        cost = request_cost(ctx, self.prices)
        self._spend(ctx, provider_label, prompt, completion, cost)
        if cost:
            m.spend.labels(m.team_label(ctx.principal.team_name), model_label).inc(cost / NANO)
        key_id = ctx.principal.key_id
        self.usage.record(key_id, ctx.model, prompt, completion)
        m.tokens.labels(model_label, "prompt").inc(prompt)
        m.tokens.labels(model_label, "completion").inc(completion)
        key = m.key_label(key_id or "static")
        m.key_tokens.labels(key, "prompt").inc(prompt)
        m.key_tokens.labels(key, "completion").inc(completion)
        m.model_latency.labels(model_label, provider_label).observe(time.perf_counter() - ctx.started)
