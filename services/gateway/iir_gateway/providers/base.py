"""The provider interface and the upstream target a provider resolves a model to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Upstream:
    """An OpenAI-compatible server and the model name it knows."""

    base_url: str  # up to and including the API version, e.g. "http://10.0.0.7:8000/v1"
    model: str
    headers: dict[str, str] = field(default_factory=dict)
    target: str = ""  # which replica, for logs


class Provider(Protocol):
    name: str

    def resolve(self, model: str) -> Upstream:
        """The upstream for `model` (the part after `<provider>/`); raises APIError 404/503."""
        ...

    def list_models(self) -> list[dict[str, Any]]:
        """OpenAI model cards of the models that can be called now."""
        ...
