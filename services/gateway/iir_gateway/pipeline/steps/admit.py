"""Step 6: the limits and budgets of the key, its user and its team. The whole estimate (prompt plus
`max_tokens`, times `n`, and its cost at the model's price) is reserved before the request goes on, with
one of the key's parallel slots; when it is over, the reservation is settled once with what was really
used (nothing, when the request failed) and the slot freed."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from iir_gateway.answer import Answer
from iir_gateway.limits.rate_limiter import Admission
from iir_gateway.limits.token_estimate import estimate_tokens
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
        estimated_cost: int = 0,
        hold: bool = False,
    ) -> Admission:
        """Takes a request, the tokens and the cost (nano-USD) from the buckets and budgets, and with `hold`
        a parallel slot; APIError 429 otherwise."""
        ...

    async def settle(self, p: Principal, admission: Admission, actual_tokens: int, actual_cost: int = 0) -> None: ...


class Admit(Step):
    name = "admit"

    def __init__(self, limiter: Limiter, prices: Prices, completion_reserve: int, spawn: Spawn) -> None:
        self.limiter = limiter
        self.prices = prices
        self.completion_reserve = completion_reserve
        self.spawn = spawn

    async def before(self, ctx: RequestContext) -> Answer | None:
        principal = ctx.principal
        assert principal is not None
        # Estimating costs a walk over the messages: only keys with token limits need it up front.
        if principal.limited:
            ctx.estimate = estimate_tokens(ctx.body, self.completion_reserve)
        estimate = ctx.estimate.total if ctx.estimate is not None else 0
        cost = 0
        if ctx.estimate is not None and principal.spends_money:
            price = self.prices.price(ctx.model)
            cost = price.cost_nano(ctx.estimate.prompt, 0, ctx.estimate.completion)
        admission = await self.limiter.admit(principal, estimate, ctx.count_request, cost, hold=True)
        ctx.state[self.name] = admission
        ctx.response_headers.update(admission.headers)
        return None

    def on_complete(self, ctx: RequestContext) -> None:
        admission: Admission | None = ctx.state.get(self.name)
        if admission is not None and admission.holds_anything and ctx.principal is not None:
            used = sum(ctx.token_counts()) if ctx.status == 200 else 0
            self.spawn(self.limiter.settle(ctx.principal, admission, used, request_cost(ctx, self.prices)))
