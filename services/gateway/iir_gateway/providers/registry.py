"""The external providers by kind (`ProviderConfig.kind`): adding one is a module with its class, and a
line here."""

from __future__ import annotations

from iir_gateway.picking.state import EndpointStates
from iir_gateway.providers.azure import AzureProvider
from iir_gateway.providers.bedrock import BedrockProvider
from iir_gateway.providers.config import ProviderConfig
from iir_gateway.providers.external import ExternalProvider
from iir_gateway.providers.vertex import VertexProvider

KINDS: dict[str, type[ExternalProvider]] = {
    "openai": ExternalProvider,
    "anthropic": ExternalProvider,
    "azure": AzureProvider,
    "vertex": VertexProvider,
    "bedrock": BedrockProvider,
}


def external_provider(name: str, config: ProviderConfig, states: EndpointStates) -> ExternalProvider:
    """The provider `name` as its configuration's kind calls it."""
    return KINDS[config.kind](name, config, states)
