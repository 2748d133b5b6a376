"""`local/<name>`: models served by vLLM pods, found through the registry's catalogue."""

from __future__ import annotations

from typing import Any

from iir_gateway.catalogue import ModelCatalogue
from iir_gateway.endpoint_pickers import EndpointPicker
from iir_gateway.errors import APIError
from iir_gateway.providers.base import Upstream


def model_not_found(model: str) -> APIError:
    return APIError(404, f"The model `{model}` does not exist or you do not have access to it.",
                    code="model_not_found", param="model")


class LocalProvider:
    name = "local"

    def __init__(self, catalogue: ModelCatalogue, picker: EndpointPicker) -> None:
        self.catalogue = catalogue
        self.picker = picker

    def resolve(self, model: str) -> Upstream:
        full = f"{self.name}/{model}"
        entry = self.catalogue.get(full)
        if entry is None:
            if not self.catalogue.synced.is_set():
                raise APIError(503, "The model registry is unavailable; try again shortly.",
                               code="registry_unavailable")
            raise model_not_found(full)
        ready = [e for e in entry.endpoints if e.ready]
        if not ready:
            raise APIError(503, f"The model `{full}` has no ready replica (phase {entry.phase or 'unknown'}"
                           f"{': ' + entry.message if entry.message else ''}).", code="model_not_ready")
        endpoint = ready[0] if len(ready) == 1 else self.picker.pick(full, ready)
        return Upstream(base_url=endpoint.url.rstrip("/") + "/v1", model=entry.served_name,
                        target=endpoint.target or endpoint.url)

    def list_models(self) -> list[dict[str, Any]]:
        return [{"id": m.name, "object": "model", "created": m.created, "owned_by": m.owned_by or "iir"}
                for m in self.catalogue.models.values() if any(e.ready for e in m.endpoints)]
