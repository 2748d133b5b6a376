"""Step 6: the limits and budgets of the key, its user and its team. The token estimate (prompt plus
`max_tokens`, times the answers: `n` for each prompt) is reserved from the token buckets, and the
request's worst case (the prompt's bound for text, `token_estimate.prompt_bound`, and every completion
token) from the budgets, before the request goes on, with one of the key's parallel slots: a request whose
`max_tokens` the budgets cannot pay is refused, and one without `max_tokens` from a key with a budget gets
the completion tokens the budgets can pay (at most `budget_max_tokens`) as its `max_tokens` (and any other
completion limit it carries) upstream, named in `x-iir-max-tokens`. When it is over, the reservation is
settled once with what was really used (nothing, when the request failed) and the slot freed. With
`request_only` (a job's submission) only the request is counted, against the RPM (and refused over
budget): its tokens are reserved when it runs."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from iir_gateway.accounting.cost import Prices, request_cost
from iir_gateway.accounting.rate_limiter import Admission, BudgetAsk
from iir_gateway.accounting.token_estimate import (
    asked_max_tokens,
    choices,
    estimate_tokens,
    prompt_bound,
)
from iir_gateway.answer import Answer
from iir_gateway.pipeline.context import RequestContext
from iir_gateway.pipeline.step import Step
from iir_gateway.principal import Principal

Spawn = Callable[[Coroutine[Any, Any, None]], None]

COMPLETION_LIMITS = ("max_tokens", "max_completion_tokens")  # what an upstream may read as the answer's limit


def cap_completion(ctx: RequestContext, tokens: int) -> None:
    """Every completion limit the request carries (and `max_tokens`) set to `tokens`, in the body and in
    the client's own format sent as it is (an Anthropic body's `max_tokens`)."""
    ctx.body = {**ctx.body, **{name: tokens for name in COMPLETION_LIMITS if name in ctx.body}, "max_tokens": tokens}
    if ctx.native is not None:
        native = ctx.native.body
        ctx.native.body = {**native, **{name: tokens for name in COMPLETION_LIMITS if name in native}}


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
        self,
        limiter: Limiter,
        prices: Prices,
        completion_reserve: int,
        spawn: Spawn,
        budget_max_tokens: int = 4096,
        request_only: bool = False,
    ) -> None:
        self.limiter = limiter
        self.prices = prices
        self.completion_reserve = completion_reserve
        self.budget_max_tokens = budget_max_tokens
        self.spawn = spawn
        self.request_only = request_only

    def _ask(self, ctx: RequestContext, principal: Principal) -> BudgetAsk | None:
        """The request's worst case for the budgets (None when the key has none)."""
        if not (principal.spends_money or principal.budget_tokens > 0):
            return None
        price = None
        if principal.spends_money:
            assert ctx.served is not None  # Access found the model
            price = ctx.served.price()
        asked = asked_max_tokens(ctx.body)
        completion = (asked or self.budget_max_tokens) if ctx.operation != "embeddings" else 0
        prompt = prompt_bound(ctx.body)  # not the estimate: a prompt can have more tokens than it says
        return BudgetAsk(
            prompt,
            price.cost_nano(prompt, 0, 0) if price else 0,
            completion,
            price.output * 1000 if price else 0.0,  # USD per million tokens → nano-USD per token
            choices(ctx.body),
            flexible=asked is None and completion > 0,
        )

    async def before(self, ctx: RequestContext) -> Answer | None:
        principal = ctx.principal
        assert principal is not None
        if self.request_only:  # nothing is held, so nothing is settled
            ctx.response_headers.update((await self.limiter.admit(principal, 0)).headers)
            return None
        # Estimating costs a walk over the messages: only keys with token limits need it up front.
        if principal.limited:
            ctx.estimate = estimate_tokens(ctx.body, self.completion_reserve)
        estimate = ctx.estimate.total if ctx.estimate is not None else 0
        ask = self._ask(ctx, principal) if ctx.estimate is not None else None
        admission = await self.limiter.admit(principal, estimate, ctx.count_request, ask, hold=True)
        ctx.state[self.name] = admission
        ctx.response_headers.update(admission.headers)
        if ask is not None and ask.flexible and admission.granted is not None:
            # The budgets pay for this many completion tokens: the upstream may not generate more.
            cap_completion(ctx, admission.granted)
            ctx.response_headers["x-iir-max-tokens"] = str(admission.granted)
        return None

    def on_complete(self, ctx: RequestContext) -> None:
        admission: Admission | None = ctx.state.get(self.name)
        if admission is not None and admission.holds_anything and ctx.principal is not None:
            used = sum(ctx.token_counts()) if ctx.status == 200 else 0
            self.spawn(self.limiter.settle(ctx.principal, admission, used, request_cost(ctx, self.prices)))
