"""Policies choosing one ready endpoint of a model, registered by name."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Protocol

from iir.v1 import registry_pb2


class EndpointPicker(Protocol):
    def pick(self, model: str, endpoints: Sequence[registry_pb2.Endpoint]) -> registry_pb2.Endpoint: ...


PICKERS: dict[str, Callable[[], EndpointPicker]] = {}


def register_picker(name: str) -> Callable[[Callable[[], EndpointPicker]], Callable[[], EndpointPicker]]:
    def wrap(factory: Callable[[], EndpointPicker]) -> Callable[[], EndpointPicker]:
        PICKERS[name] = factory
        return factory
    return wrap


@register_picker("round_robin")
class RoundRobinPicker:
    """Each model's endpoints in turn."""

    def __init__(self) -> None:
        self._counters: dict[str, itertools.count[int]] = {}

    def pick(self, model: str, endpoints: Sequence[registry_pb2.Endpoint]) -> registry_pb2.Endpoint:
        counter = self._counters.setdefault(model, itertools.count())
        return endpoints[next(counter) % len(endpoints)]


def make_picker(name: str) -> EndpointPicker:
    try:
        return PICKERS[name]()
    except KeyError:
        raise ValueError(f"unknown endpoint picker {name!r}; known: {', '.join(sorted(PICKERS))}") from None
