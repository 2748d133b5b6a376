"""The providers by name: which one serves a public model name (`<provider>/<model>`), whether a key
may use it, its fallbacks, its price and its metric labels. A request's model is parsed once, by the
Access step, into a `ServedModel` the later steps read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from iir_gateway.accounting.prices import FREE, Price
from iir_gateway.errors import APIError
from iir_gateway.principal import Principal
from iir_gateway.providers.base import Provider, RouteRequest
from iir_gateway.upstream.target import Upstream


@dataclass(frozen=True, slots=True)
class ServedModel:
    """A public model name and the provider serving it, under `name` (the part after `<provider>/`)."""

    public: str
    provider: Provider
    name: str

    def check_access(self, principal: Principal) -> None:
        """403 when the key may not use the model."""
        if not principal.may_use(self.public):
            raise APIError(
                403, f"This API key may not use the model `{self.public}`.", code="model_not_allowed", param="model"
            )

    def fallbacks(self) -> tuple[str, ...]:
        return self.provider.fallbacks(self.name)

    def known(self) -> bool:
        """Whether the provider's catalogue or configuration has the model (not merely passing it on)."""
        return self.provider.knows(self.name)

    def price(self) -> Price:
        return self.provider.price(self.name)

    def counter(self) -> Upstream | None:
        """An upstream that counts the request's tokens as it bills them; None without one."""
        return self.provider.counter(self.name)

    def labels(self) -> tuple[str, str]:
        """(model, provider) as metric labels: a name the catalogue or configuration knows, else `other`,
        so made-up names cannot grow the metrics without bound."""
        return (self.public if self.known() else "other"), self.provider.name

    async def resolve(self, request: RouteRequest) -> Upstream:
        """The upstream to send the request to; APIError 404/429/503."""
        return await self.provider.resolve(self.name, request)


class ModelDirectory:
    def __init__(self, providers: Mapping[str, Provider]) -> None:
        self.providers = dict(providers)

    def _parse(self, model: str) -> ServedModel | None:
        provider_name, _, name = model.partition("/")
        provider = self.providers.get(provider_name)
        return ServedModel(model, provider, name) if provider is not None and name else None

    def find(self, model: str) -> ServedModel:
        """404 for a malformed name or an unknown provider."""
        served = self._parse(model)
        if served is not None:
            return served
        provider_name, sep, name = model.partition("/")
        if not sep or not name:
            raise APIError(
                404,
                f"The model `{model}` does not exist. Model names are `<provider>/<model>`, "
                f"e.g. `local/llama-3-8b-instruct`; see GET /v1/models.",
                code="model_not_found",
                param="model",
            )
        raise APIError(
            404,
            f"Unknown provider `{provider_name}` in model `{model}`; known providers: "
            f"{', '.join(sorted(self.providers))}.",
            code="model_not_found",
            param="model",
        )

    def check_access(self, model: str, principal: Principal) -> ServedModel:
        """The model, parsed: 404 for a malformed name or an unknown provider, 403 when the key may not use it."""
        served = self.find(model)
        served.check_access(principal)
        return served

    def price(self, model: str) -> Price:
        """What a public model's tokens cost (free when nothing prices it)."""
        served = self._parse(model)
        return served.price() if served is not None else FREE

    def model_cards(self) -> list[dict[str, Any]]:
        return [card for p in self.providers.values() for card in p.list_models()]
