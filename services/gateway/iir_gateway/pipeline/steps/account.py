"""Step 7: what each answered request used, per key and model (usage records for billing), and the
per-model metrics: requests by status, tokens, latency."""

from __future__ import annotations

import time
from typing import Protocol

from iir_gateway.metrics import GatewayMetrics
from iir_gateway.pipeline.context import RequestContext
from iir_gateway.pipeline.step import Step


class UsageSink(Protocol):
    def record(self, key_id: str, model: str, prompt_tokens: int, completion_tokens: int) -> None: ...


class ModelLabels(Protocol):
    def model_label(self, model: str) -> tuple[str, str]:
        """(model, provider) as bounded metric labels."""
        ...


class Account(Step):
    name = "account"

    def __init__(self, usage: UsageSink, labels: ModelLabels, metrics: GatewayMetrics) -> None:
        self.usage = usage
        self.labels = labels
        self.metrics = metrics

    def on_complete(self, ctx: RequestContext) -> None:
        m = self.metrics
        model_label, provider_label = self.labels.model_label(ctx.model)
        m.model_requests.labels(model_label, provider_label, str(ctx.status)).inc()
        if ctx.status != 200 or ctx.principal is None:
            return
        prompt, completion = ctx.token_counts()
        key_id = ctx.principal.key_id
        self.usage.record(key_id, ctx.model, prompt, completion)
        m.tokens.labels(model_label, "prompt").inc(prompt)
        m.tokens.labels(model_label, "completion").inc(completion)
        key = m.key_label(key_id or "static")
        m.key_tokens.labels(key, "prompt").inc(prompt)
        m.key_tokens.labels(key, "completion").inc(completion)
        m.model_latency.labels(model_label, provider_label).observe(time.perf_counter() - ctx.started)
