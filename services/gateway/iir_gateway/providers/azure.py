"""Azure OpenAI: a resource's deployments, in OpenAI's wire format.

`{endpoint}/openai/deployments/{deployment}/chat/completions?api-version=…` (and `/embeddings`,
`/completions`), the deployment being the model's configured `deployment` or its name. Authenticated by
the `api-key` header with the provider's key, or (`azure.entra`) by a Microsoft Entra ID bearer token
that a service principal's client credentials get from the token endpoint, cached until it expires.
"""

from __future__ import annotations

from urllib.parse import quote

from iir_gateway.picking.state import EndpointStates
from iir_gateway.providers.config import EntraOptions, ProviderConfig, read_secret
from iir_gateway.providers.external import ExternalProvider, Route
from iir_gateway.providers.tokens import TokenCache, digest, lifetime, post_form
from iir_gateway.upstream.target import CredentialsError


class EntraAuth:
    """The `authorization: Bearer` header of a service principal (OAuth 2.0 client credentials)."""

    def __init__(self, options: EntraOptions, keys_dir: str) -> None:
        self.options = options
        self.keys_dir = keys_dir
        self.tokens = TokenCache()

    def secret(self) -> str:
        """The client secret, read per request (a rotated Secret file takes effect at once)."""
        return read_secret(self.options.client_secret_file, self.options.client_secret_env, self.keys_dir)

    def missing(self) -> str:
        if self.secret():
            return ""
        where = [f"the environment variable {self.options.client_secret_env}"] if self.options.client_secret_env else []
        if self.options.client_secret_file:
            where.insert(0, f"the file {self.options.client_secret_file}")
        return " or ".join(where) or "azure.entra.client_secret_file"

    async def authorize(self, method: str, url: str, headers: dict[str, str], body: bytes) -> dict[str, str]:
        secret = self.secret()
        if not secret:
            raise CredentialsError("the Entra ID client secret is missing")
        options = self.options
        key = digest(options.url(), options.client_id, options.scope, secret)

        async def fetch() -> tuple[str, float]:
            fields = {
                "grant_type": "client_credentials",
                "client_id": options.client_id,
                "client_secret": secret,
                "scope": options.scope,
            }
            data = await post_form(options.url(), fields)
            return str(data["access_token"]), lifetime(data)

        return {"authorization": f"Bearer {await self.tokens.get(key, fetch)}"}


class AzureProvider(ExternalProvider):
    def __init__(self, name: str, config: ProviderConfig, states: EndpointStates) -> None:
        super().__init__(name, config, states)
        entra = config.azure.entra
        self.entra = EntraAuth(entra, config.api_key_dir) if entra is not None else None

    def missing_credentials(self) -> str:
        return self.entra.missing() if self.entra is not None else super().missing_credentials()

    def route(self, model: str) -> Route:
        headers = dict(self.config.headers)
        if self.entra is None:
            key = self.config.api_key()  # read per request, so a rotated Secret file takes effect
            if key:
                headers["api-key"] = key
        return Route(
            base_url=f"{self.config.base_url}/openai/deployments/{quote(model, safe='')}",
            wire="openai",
            headers=headers,
            query=f"api-version={quote(self.config.azure.api_version, safe='')}",
            auth=self.entra,
        )

    def price_table(self, model: str) -> str:
        return "openai"  # OpenAI's models, at OpenAI's list prices
