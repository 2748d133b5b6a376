"""Step 6: the limits and budgets of the key, its user and its team. The token estimate (prompt plus
`max_tokens`, times `n`) is reserved from the token buckets, and the request's worst-case cost from the
budgets, before the request goes on, with one of the key's parallel slots: a request whose `max_tokens`
the budgets cannot pay is refused, and one without `max_tokens` from a key with a budget gets the
completion tokens the budgets can pay (at most `budget_max_tokens`) as its `max_tokens` upstream, named in
`x-iir-max-tokens`. When it is over, the reservation is settled once with what was really used (nothing,
when the request failed) and the slot freed."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from iir_gateway.answer import Answer
from iir_gateway.limits.rate_limiter import Admission, BudgetAsk
from iir_gateway.limits.token_estimate import TokenEstimate, asked_max_tokens, choices, estimate_tokens, generates
from iir_gateway.pipeline.context import RequestContext
from iir_gateway.pipeline.cost import Prices, request_cost
from iir_gateway.pipeline.step import Step
from iir_gateway.principal import Principal

Spawn = Callable[[Coroutine[Any, Any, None]], None]


class Limiter(Protocol):
    async def admit(
        self,
        p: Principal,
        estimated_tokens: int,
        count_request: bool = True,
        ask: BudgetAsk | None = None,
        hold: bool = False,
    ) -> Admission:
        """Takes a request and the tokens from the buckets, the worst case of `ask` from the budgets, and
        with `hold` a parallel slot; APIError 429 otherwise."""
        ...

    async def settle(self, p: Principal, admission: Admission, actual_tokens: int, actual_cost: int = 0) -> None: ...


class Admit(Step):
    name = "admit"

    def __init__(
        self, limiter: Limiter, prices: Prices, completion_reserve: int, spawn: Spawn, budget_max_tokens: int = 4096
    ) -> None:
        self.limiter = limiter
        self.prices = prices
        self.completion_reserve = completion_reserve
        self.budget_max_tokens = budget_max_tokens
        self.spawn = spawn

    def _ask(self, ctx: RequestContext, principal: Principal, estimate: TokenEstimate) -> BudgetAsk | None:
        """The request's worst case for the budgets (None when the key has none)."""
        if not (principal.spends_money or principal.budget_tokens > 0):
            return None
        price = self.prices.price(ctx.model) if principal.spends_money else None
        asked = asked_max_tokens(ctx.body)
        completion = (asked or self.budget_max_tokens) if generates(ctx.body) else 0
        return BudgetAsk(
            estimate.prompt,
            price.cost_nano(estimate.prompt, 0, 0) if price else 0,
            completion,
            price.output * 1000 if price else 0.0,  # USD per million tokens → nano-USD per token
            choices(ctx.body),
            flexible=asked is None and completion > 0,
        )

    async def before(self, ctx: RequestContext) -> Answer | None:
        principal = ctx.principal
        assert principal is not None
        # Estimating costs a walk over the messages: only keys with token limits need it up front.
        if principal.limited:
            ctx.estimate = estimate_tokens(ctx.body, self.completion_reserve)
        estimate = ctx.estimate.total if ctx.estimate is not None else 0
        ask = self._ask(ctx, principal, ctx.estimate) if ctx.estimate is not None else None
        admission = await self.limiter.admit(principal, estimate, ctx.count_request, ask, hold=True)
        ctx.state[self.name] = admission
        ctx.response_headers.update(admission.headers)
        if ask is not None and ask.flexible and admission.granted is not None:
            # The budgets pay for this many completion tokens: the upstream may not generate more.
            ctx.body = {**ctx.body, "max_tokens": admission.granted}
            ctx.response_headers["x-iir-max-tokens"] = str(admission.granted)
        return None

    def on_complete(self, ctx: RequestContext) -> None:
        admission: Admission | None = ctx.state.get(self.name)
        if admission is not None and admission.holds_anything and ctx.principal is not None:
            used = sum(ctx.token_counts()) if ctx.status == 200 else 0
            self.spawn(self.limiter.settle(ctx.principal, admission, used, request_cost(ctx, self.prices)))
