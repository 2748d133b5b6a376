"""Step 7: what each request used and cost: one spend record per request (for spend queries, the request
log and, in the auth service, usage per key and model), and the per-model metrics: requests by status,
tokens, latency, money. A running stream's record is checkpointed (what it relayed so far), so a gateway
crash still bills it. For keys and teams that log bodies, the record carries the request and its answer
as the client got them (after scrubbing, which runs before this step), cut to `body_cap` characters."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol

import orjson

from iir.v1 import auth_pb2
from iir_gateway.accounting.cost import Prices, cached_tokens, request_cost
from iir_gateway.accounting.rate_limiter import NANO
from iir_gateway.answer import Event
from iir_gateway.caching.assembler import StreamAssembler
from iir_gateway.metrics import GatewayMetrics
from iir_gateway.pipeline.context import RequestContext
from iir_gateway.pipeline.step import Step
from iir_gateway.pipeline.steps.dispatch import RELAY

_ID = "spend_id"  # ctx.state: the record's id and time, fixed when a stream is tracked
_AT = "spend_at_ms"
_ANSWER = "logged_answer"  # ctx.state: the answer's bytes, or the assembler of its stream, when logged


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

    def __init__(self, spend: SpendSink, prices: Prices, metrics: GatewayMetrics, body_cap: int = 16384) -> None:
        self.spend = spend
        self.prices = prices
        self.metrics = metrics
        self.body_cap = body_cap

    @staticmethod
    def _logs_bodies(ctx: RequestContext) -> bool:
        return ctx.principal is not None and ctx.principal.logs_bodies()

    def on_document(self, ctx: RequestContext, document: Event) -> Event:
        if self._logs_bodies(ctx):
            ctx.state[_ANSWER] = document.raw
        return document

    def wants_chunks(self, ctx: RequestContext) -> bool:
        return self._logs_bodies(ctx)  # no cost on the stream of a key that logs no bodies

    def on_chunk(self, ctx: RequestContext, event: Event) -> Sequence[Event]:
        data = event.data
        if isinstance(data, dict):
            ctx.state.setdefault(_ANSWER, StreamAssembler()).add(data)
        return (event,)

    def _bodies(self, ctx: RequestContext) -> tuple[str, str]:
        """(request, answer) as JSON text cut to the cap, for a key or team that logs them; else empty."""
        if not self._logs_bodies(ctx):
            return "", ""
        answer = ctx.state.get(_ANSWER)
        if isinstance(answer, StreamAssembler):
            whole = answer.completion()
            answer = orjson.dumps(whole) if whole is not None else b""
        request = orjson.dumps(ctx.body).decode("utf-8", "replace")
        response = answer.decode("utf-8", "replace") if isinstance(answer, bytes) else ""
        return request[: self.body_cap], response[: self.body_cap]

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
        record = self._record(ctx, provider, prompt, completion, cost)
        record.request_body, record.response_body = self._bodies(ctx)
        self.spend.record(record)

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
