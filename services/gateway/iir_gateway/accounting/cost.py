"""What a request cost in money: its tokens at the price of the model that answered."""

from __future__ import annotations

from typing import Any, Protocol

from iir_gateway.accounting.prices import Price


class Prices(Protocol):
    def price(self, model: str) -> Price:
        """USD per million tokens of a public model name (free when unpriced)."""
        ...


def cached_tokens(usage: dict[str, Any] | None) -> int:
    """Prompt tokens the upstream served from its cache (OpenAI's `prompt_tokens_details`)."""
    details = (usage or {}).get("prompt_tokens_details") or {}
    return int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0


class CostedRequest(Protocol):
    """What the cost of a request is computed from (the pipeline's RequestContext)."""

    status: int
    cache_hit: bool
    answered_by: str
    model: str
    usage: dict[str, Any] | None
    state: dict[str, Any]

    def token_counts(self) -> tuple[int, int]: ...


def request_cost(ctx: CostedRequest, prices: Prices) -> int:
    """The cost in nano-USD of what the request used (0 when it failed or was a cache hit); computed once."""
    cost = ctx.state.get("cost")
    if cost is None:
        if ctx.status != 200 or ctx.cache_hit:
            cost = 0
        else:
            prompt, completion = ctx.token_counts()
            cost = prices.price(ctx.answered_by or ctx.model).cost_nano(prompt, cached_tokens(ctx.usage), completion)
        ctx.state["cost"] = cost
    return int(cost)
