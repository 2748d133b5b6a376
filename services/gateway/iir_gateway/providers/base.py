"""The provider interface and the upstream target a provider resolves a model to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from iir_gateway.providers.config import Timeouts


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """What a provider may use to choose where a request goes."""

    body: dict[str, Any]
    priority: int = 0
    session: str = ""


@dataclass(frozen=True, slots=True)
class Upstream:
    """An OpenAI-compatible server and the model name it knows."""

    base_url: str  # up to and including the API version, e.g. "http://10.0.0.7:8000/v1"
    model: str
    headers: dict[str, str] = field(default_factory=dict)
    target: str = ""  # which replica, for logs
    endpoint: str = ""  # its key in the endpoint states (health, load)
    public_model: str = ""
    metric_model: str = "other"  # public_model when the catalogue or configuration knows it (bounded labels)
    wire: Literal["openai", "anthropic"] = "openai"
    timeouts: Timeouts | None = None  # None: the gateway's defaults
    retries: int = 2


class Provider(Protocol):
    name: str

    async def resolve(self, model: str, request: RouteRequest) -> Upstream:
        """The upstream for `model` (the part after `<provider>/`); raises APIError 404/429/503."""
        ...

    def fallbacks(self, model: str) -> tuple[str, ...]:
        """Public names of the models to try, in order, when `model` cannot answer."""
        ...

    def release(self, upstream: Upstream, ok: bool) -> None:
        """The request sent to `upstream` ended; `ok` False for a connection failure, timeout or 5xx."""
        ...

    def list_models(self) -> list[dict[str, Any]]:
        """OpenAI model cards of the models that can be called now."""
        ...

    def knows(self, model: str) -> bool:
        """Whether `model` is in this provider's catalogue or configuration (not merely passed through)."""
        ...
