"""External APIs (`openai/…`, `anthropic/…`, any named OpenAI-compatible server): one instance per provider.

Each model of a provider is a circuit: after consecutive failures it is skipped (requests go to its
fallbacks, or get 503) until the ejection time is up and a probe request succeeds. Models, not base
URLs, because providers overload and fail one model at a time.

A provider of another kind (Azure, Vertex, Bedrock) is a subclass that says where a model's requests go
and with which credentials (`route`, `missing_credentials`); `providers.registry` has them by kind.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from iir_gateway.accounting.prices import FREE, Price, built_in_price
from iir_gateway.errors import APIError
from iir_gateway.picking.state import EndpointStates
from iir_gateway.providers.base import RouteRequest
from iir_gateway.providers.config import ProviderConfig
from iir_gateway.upstream.target import RequestAuth, Upstream

ANTHROPIC_VERSION = "2023-06-01"


@dataclass(frozen=True, slots=True)
class Route:
    """Where one model's requests go: its base URL, wire format and credentials."""

    base_url: str
    wire: str
    headers: dict[str, str] = field(default_factory=dict)
    query: str = ""
    auth: RequestAuth | None = None


class ExternalProvider:
    def __init__(self, name: str, config: ProviderConfig, states: EndpointStates) -> None:
        self.name = name
        self.config = config
        self.states = states
        self.created = int(time.time())

    def missing_credentials(self) -> str:
        """What the operator must set before this provider can be used; "" when nothing is missing."""
        return self.config.missing_credentials()

    def route(self, model: str) -> Route:
        """Where the requests for `model` (the upstream's name for it) go."""
        return Route(self.config.base_url, self.config.kind, self._headers())

    def price_table(self, model: str) -> str:
        """Which built-in price list prices `model` (a provider kind of `accounting.prices`)."""
        return self.config.kind

    def upstream_model(self, model: str) -> str:
        """The name the upstream knows `model` by (its configured `deployment`, else its own)."""
        options = self.config.models.get(model)
        return options.deployment if options is not None and options.deployment else model

    def _headers(self) -> dict[str, str]:
        key = self.config.api_key()  # read per request, so a rotated Secret file takes effect
        if self.config.kind == "anthropic":
            auth = (
                {"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION}
                if key
                else {"anthropic-version": ANTHROPIC_VERSION}
            )
        else:
            auth = {"authorization": f"Bearer {key}"} if key else {}
        return {**self.config.headers, **auth}

    async def resolve(self, model: str, request: RouteRequest) -> Upstream:
        missing = self.missing_credentials()
        if missing:
            what = "API key is" if self.config.kind in ("openai", "anthropic") else "credentials are"
            raise APIError(
                404,
                f"The provider `{self.name}` is not configured: its {what} missing (set {missing}).",
                code="provider_not_configured",
                param="model",
            )
        circuit = f"{self.config.base_url}#{model}"
        state = self.states.get(circuit)
        now = time.monotonic()
        if not state.healthy(now):
            wait = math.ceil(state.ejected_until - now)
            raise APIError(
                503,
                f"The provider `{self.name}` failed repeatedly and is skipped for {wait}s more.",
                code="upstream_circuit_open",
                headers={"retry-after": str(max(1, wait))},
            )
        name = self.upstream_model(model)
        route = self.route(name)
        self.states.started(circuit)
        return Upstream(
            base_url=route.base_url,
            model=name,
            headers=route.headers,
            target=self.name,
            endpoint=circuit,
            public_model=f"{self.name}/{model}",
            metric_model=f"{self.name}/{model}" if self.knows(model) else "other",
            wire=route.wire,
            timeouts=self.config.timeouts,
            retries=self.config.retries,
            query=route.query,
            auth=route.auth,
        )

    def fallbacks(self, model: str) -> tuple[str, ...]:
        options = self.config.models.get(model)
        return options.fallbacks if options else ()

    def release(self, upstream: Upstream, ok: bool | None) -> None:
        self.states.finished(upstream.endpoint, ok)
        if not self.knows(upstream.public_model.partition("/")[2]):
            # Any name a client makes up gets a circuit: kept only while it has requests or failures, or
            # made-up names would grow the states (and their metric series) without bound.
            state = self.states.get(upstream.endpoint)
            if state.outstanding == 0 and state.failures == 0 and state.healthy(time.monotonic()):
                self.states.forget([upstream.endpoint])

    def counter(self, model: str) -> Upstream | None:
        return None  # OpenAI-compatible APIs have no token count; Anthropic's is not asked

    def knows(self, model: str) -> bool:
        return model in self.config.models

    def price(self, model: str) -> Price:
        options = self.config.models.get(model)
        if options is not None and options.price is not None:
            return options.price
        return built_in_price(self.price_table(model), self.upstream_model(model)) or FREE

    def list_models(self) -> list[dict[str, Any]]:
        if self.missing_credentials():
            return []
        return [
            {"id": f"{self.name}/{m}", "object": "model", "created": self.created, "owned_by": self.name}
            for m in self.config.models
        ]
