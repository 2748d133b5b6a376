"""The plugin interfaces and the request facts plugins read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from iir_gateway.picking.state import EndpointState, EndpointStates


@dataclass(frozen=True)
class PickRequest:
    """What the picker knows of a request."""

    model: str
    # Chained hashes of the prompt's leading blocks (see prefix.py); empty when not computed.
    prefix_blocks: list[int] = field(default_factory=list)
    session: str = ""
    # The LoRA adapter's served name, when the model is one (empty for a base model).
    adapter: str = ""


class Filter(Protocol):
    def filter(self, request: PickRequest, endpoints: Sequence[EndpointState], now: float) -> list[EndpointState]:
        """The endpoints still eligible; an empty result means none is."""
        ...


class Scorer(Protocol):
    def score(self, request: PickRequest, endpoints: Sequence[EndpointState]) -> list[float]:
        """One score in [0, 1] per endpoint, higher is better."""
        ...


class Picker(Protocol):
    def pick(
        self, request: PickRequest, endpoints: Sequence[EndpointState], scores: Sequence[float]
    ) -> EndpointState: ...


@dataclass(frozen=True)
class PluginContext:
    """What plugin factories may use."""

    states: EndpointStates
