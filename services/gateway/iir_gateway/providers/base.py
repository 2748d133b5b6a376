"""The provider interface: a provider resolves a model name to an `Upstream`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from iir_gateway.accounting.prices import Price
from iir_gateway.upstream.target import Upstream


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """What a provider may use to choose where a request goes."""

    body: dict[str, Any]
    priority: int = 0
    session: str = ""


class Provider(Protocol):
    name: str

    async def resolve(self, model: str, request: RouteRequest) -> Upstream:
        """The upstream for `model` (the part after `<provider>/`); raises APIError 404/429/503."""
        ...

    def fallbacks(self, model: str) -> tuple[str, ...]:
        """Public names of the models to try, in order, when `model` cannot answer."""
        ...

    def release(self, upstream: Upstream, ok: bool | None) -> None:
        """The request sent to `upstream` ended; `ok` False for a connection failure, timeout or 5xx, None
        for what says nothing of its health (a 429, the caller's own 4xx)."""
        ...

    def list_models(self) -> list[dict[str, Any]]:
        """OpenAI model cards of the models that can be called now."""
        ...

    def price(self, model: str) -> Price:
        """What `model`'s tokens cost (free when nothing prices it)."""
        ...

    def counter(self, model: str) -> Upstream | None:
        """An upstream that counts a request's tokens as it would bill them (vLLM's `/tokenize`), chosen
        without waiting; None when there is none (an external API, no replica ready)."""
        ...

    def knows(self, model: str) -> bool:
        """Whether `model` is in this provider's catalogue or configuration (not merely passed through)."""
        ...
