"""What picking plugins read: the request's facts, and the context their factories get."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from iir_gateway.picking.state import EndpointStates


@dataclass(frozen=True)
class PickRequest:
    """What the picker knows of a request."""

    model: str
    # Chained hashes of the prompt's leading blocks (see prefix.py); empty when not computed.
    prefix_blocks: list[int] = field(default_factory=list)
    session: str = ""
    # The LoRA adapter's served name, when the model is one (empty for a base model).
    adapter: str = ""
    # Prompt length in tokens: the model's tokenizer's count where the model names one, else an estimate.
    prompt_tokens: int = 0
    # The prompt's KV block hashes as the engine computes them (as its KV events carry them); empty
    # when the model names no tokenizer. `block_size` tokens each.
    kv_blocks: list[int] = field(default_factory=list)
    block_size: int = 16


class BlockIndex(Protocol):
    """Which replicas hold which KV blocks, from the engines' own KV events (picking/kv_index.py)."""

    def publishing(self, url: str) -> bool:
        """Whether the replica's events are known (else its cache is unknown, not empty)."""
        ...

    def match_lengths(self, hashes: Sequence[int], urls: Sequence[str]) -> list[int]:
        """Per URL, how many leading hashes of the request that replica holds."""
        ...


@dataclass(frozen=True)
class PluginContext:
    """What plugin factories may use."""

    states: EndpointStates
    kv_index: BlockIndex | None = None
    # The engines' prefill speed, tokens per second (predicted_ttft drains its backlog estimate with it).
    prefill_tokens_per_s: float = 10_000.0
