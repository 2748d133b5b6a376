"""The providers by name: which one serves a public model name (`<provider>/<model>`), whether a key
may use it, its fallbacks, and its metric labels."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from iir_gateway.accounting.prices import FREE, Price
from iir_gateway.errors import APIError
from iir_gateway.principal import Principal
from iir_gateway.providers.base import Provider, RouteRequest
from iir_gateway.upstream.target import Upstream


class ModelDirectory:
    def __init__(self, providers: Mapping[str, Provider]) -> None:
        self.providers = dict(providers)

    def fallbacks(self, model: str) -> tuple[str, ...]:
        provider_name, _, name = model.partition("/")
        provider = self.providers.get(provider_name)
        return provider.fallbacks(name) if provider is not None and name else ()

    def model_label(self, model: str) -> tuple[str, str]:
        """(model, provider) as metric labels: names the catalogue or configuration knows, else `other`, so
        made-up names cannot grow the metrics without bound."""
        provider_name, _, name = model.partition("/")
        provider = self.providers.get(provider_name)
        if provider is None:
            return "other", "other"
        return (model if name and provider.knows(name) else "other"), provider_name

    def price(self, model: str) -> Price:
        provider_name, _, name = model.partition("/")
        provider = self.providers.get(provider_name)
        return provider.price(name) if provider is not None and name else FREE

    def check_access(self, model: str, principal: Principal) -> None:
        """404 for a malformed name or an unknown provider, 403 when the key may not use the model."""
        provider_name, sep, name = model.partition("/")
        if not sep or not name:
            raise APIError(
                404,
                f"The model `{model}` does not exist. Model names are `<provider>/<model>`, "
                f"e.g. `local/llama-3-8b-instruct`; see GET /v1/models.",
                code="model_not_found",
                param="model",
            )
        if provider_name not in self.providers:
            raise APIError(
                404,
                f"Unknown provider `{provider_name}` in model `{model}`; known providers: "
                f"{', '.join(sorted(self.providers))}.",
                code="model_not_found",
                param="model",
            )
        if not principal.may_use(model):
            raise APIError(
                403, f"This API key may not use the model `{model}`.", code="model_not_allowed", param="model"
            )

    async def route(self, model: str, principal: Principal, request: RouteRequest) -> tuple[Provider, Upstream]:
        """The provider and upstream for a public model name, after the key's access check."""
        self.check_access(model, principal)
        provider_name, _, name = model.partition("/")
        provider = self.providers[provider_name]
        return provider, await provider.resolve(name, request)

    def model_cards(self) -> list[dict[str, Any]]:
        return [card for p in self.providers.values() for card in p.list_models()]
