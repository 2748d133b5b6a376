"""Step 6: the key's request and token limits and its budget. The whole estimate (prompt plus
`max_tokens`, times `n`) is reserved before the request goes on; when it is over, the reservation is
settled once with what was really used (nothing, when the request failed)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from iir_gateway.answer import Answer
from iir_gateway.limits.rate_limiter import Admission
from iir_gateway.limits.token_estimate import estimate_tokens
from iir_gateway.pipeline.context import RequestContext
from iir_gateway.pipeline.step import Step
from iir_gateway.principal import Principal

Spawn = Callable[[Coroutine[Any, Any, None]], None]


class Limiter(Protocol):
    async def admit(self, p: Principal, estimated_tokens: int, count_request: bool = True) -> Admission:
        """Takes a request and the tokens from the key's buckets and budget; APIError 429 otherwise."""
        ...

    async def settle(self, p: Principal, reserved: int, actual: int) -> None: ...


class Admit(Step):
    name = "admit"

    def __init__(self, limiter: Limiter, completion_reserve: int, spawn: Spawn) -> None:
        self.limiter = limiter
        self.completion_reserve = completion_reserve
        self.spawn = spawn

    async def before(self, ctx: RequestContext) -> Answer | None:
        principal = ctx.principal
        assert principal is not None
        # Estimating costs a walk over the messages: only keys with token limits need it up front.
        if principal.limited:
            ctx.estimate = estimate_tokens(ctx.body, self.completion_reserve)
        estimate = ctx.estimate.total if ctx.estimate is not None else 0
        admission = await self.limiter.admit(principal, estimate, ctx.count_request)
        ctx.reserved_tokens = admission.reserved_tokens
        ctx.response_headers.update(admission.headers)
        return None

    def on_complete(self, ctx: RequestContext) -> None:
        if ctx.reserved_tokens and ctx.principal is not None:
            used = sum(ctx.token_counts()) if ctx.status == 200 else 0
            self.spawn(self.limiter.settle(ctx.principal, ctx.reserved_tokens, used))
