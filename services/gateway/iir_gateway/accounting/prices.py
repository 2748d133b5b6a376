"""What tokens cost: USD per million input, cached input and output tokens, per model.

Built in for the external providers' well-known models (their public list prices, matched by the
longest name prefix, so dated versions are priced too); a model's `price` in the providers file
overrides them; local models take theirs from the InferenceModel's `spec.routing.cost`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Price(BaseModel):
    """USD per million tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    input: float = Field(0.0, ge=0)
    cached_input: float | None = Field(None, ge=0)  # unset: the input price
    output: float = Field(0.0, ge=0)

    def cost_nano(self, prompt: int, cached: int, completion: int) -> int:
        """The cost of a request in nano-USD (tokens × USD per million × 1000)."""
        cached = min(max(cached, 0), prompt)
        cached_price = self.input if self.cached_input is None else self.cached_input
        return round(((prompt - cached) * self.input + cached * cached_price + completion * self.output) * 1000)


FREE = Price()

_BUILT_IN: dict[str, dict[str, Price]] = {
    "openai": {
        "gpt-4o-mini": Price(input=0.15, cached_input=0.075, output=0.60),
        "gpt-4o": Price(input=2.50, cached_input=1.25, output=10.00),
        "gpt-4.1-nano": Price(input=0.10, cached_input=0.025, output=0.40),
        "gpt-4.1-mini": Price(input=0.40, cached_input=0.10, output=1.60),
        "gpt-4.1": Price(input=2.00, cached_input=0.50, output=8.00),
        "gpt-4-turbo": Price(input=10.00, output=30.00),
        "gpt-3.5-turbo": Price(input=0.50, output=1.50),
        "o4-mini": Price(input=1.10, cached_input=0.275, output=4.40),
        "o3-mini": Price(input=1.10, cached_input=0.55, output=4.40),
        "o3": Price(input=2.00, cached_input=0.50, output=8.00),
        "o1": Price(input=15.00, cached_input=7.50, output=60.00),
        "text-embedding-3-small": Price(input=0.02),
        "text-embedding-3-large": Price(input=0.13),
        "text-embedding-ada-002": Price(input=0.10),
    },
    "anthropic": {
        "claude-3-haiku": Price(input=0.25, cached_input=0.03, output=1.25),
        "claude-3-5-haiku": Price(input=0.80, cached_input=0.08, output=4.00),
        "claude-haiku-4-5": Price(input=1.00, cached_input=0.10, output=5.00),
        "claude-3-5-sonnet": Price(input=3.00, cached_input=0.30, output=15.00),
        "claude-3-7-sonnet": Price(input=3.00, cached_input=0.30, output=15.00),
        "claude-sonnet-4": Price(input=3.00, cached_input=0.30, output=15.00),
        "claude-opus-4": Price(input=15.00, cached_input=1.50, output=75.00),
        "claude-3-opus": Price(input=15.00, cached_input=1.50, output=75.00),
    },
}


def built_in_price(provider: str, model: str) -> Price | None:
    """The list price of a well-known model, by the longest name prefix (`gpt-4o-2024-08-06` is `gpt-4o`)."""
    table = _BUILT_IN.get(provider, {})
    best = max((name for name in table if model.startswith(name)), key=len, default=None)
    return table[best] if best else None
