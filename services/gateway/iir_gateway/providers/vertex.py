"""Google Vertex AI: Claude (`publishers/anthropic`, Anthropic's Messages API behind `rawPredict`) and Gemini
(`publishers/google`, `generateContent`) in one project and region, authenticated as a service account.

`{base_url}/v1/projects/{project}/locations/{region}/publishers/{publisher}/models/{model}:{method}`; a
model whose upstream name starts with `claude` is Anthropic's, any other Google's. The project is
`vertex.project`, else the key file's `project_id`.
"""

from __future__ import annotations

from urllib.parse import quote

from iir_gateway.picking.state import EndpointStates
from iir_gateway.providers.config import ProviderConfig
from iir_gateway.providers.external import ExternalProvider, Route
from iir_gateway.providers.google_auth import ServiceAccountAuth


def is_claude(model: str) -> bool:
    return model.startswith("claude")


class VertexProvider(ExternalProvider):
    def __init__(self, name: str, config: ProviderConfig, states: EndpointStates) -> None:
        super().__init__(name, config, states)
        self.auth = ServiceAccountAuth(config.vertex.key_file(), config.vertex.scope)

    def _project(self) -> str:
        if self.config.vertex.project:
            return self.config.vertex.project
        key = self.auth.key()
        return key.project_id if key is not None else ""

    def missing_credentials(self) -> str:
        if self.auth.key() is None:
            where = f"the file {self.auth.key_file} (a service account's JSON key)" if self.auth.key_file else ""
            return where or "vertex.credentials_file or GOOGLE_APPLICATION_CREDENTIALS (a service account's JSON key)"
        return "" if self._project() else "vertex.project"

    def route(self, model: str) -> Route:
        publisher, wire = ("anthropic", "vertex-anthropic") if is_claude(model) else ("google", "gemini")
        project, region = quote(self._project(), safe=""), quote(self.config.vertex.region, safe="")
        base = f"{self.config.base_url}/v1/projects/{project}/locations/{region}/publishers/{publisher}/models"
        return Route(base, wire, dict(self.config.headers), auth=self.auth)

    def price_table(self, model: str) -> str:
        return "anthropic" if is_claude(self.upstream_model(model)) else "gemini"
