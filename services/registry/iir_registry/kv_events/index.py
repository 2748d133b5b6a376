"""What each followed replica's KV cache holds: per endpoint, the block hashes on its GPU and off it.

The registry never asks which replicas hold a hash (each gateway's KvIndex answers that, from what this
index pushes), so it keeps a set per replica and tier: clearing, forgetting and snapshotting a replica
are then one set operation each. Every change is handed on to a `Deltas` (the Watch publisher).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol


class Deltas(Protocol):
    def stored(self, url: str, hashes: list[int], cpu: bool) -> None: ...

    def removed(self, url: str, hashes: list[int], cpu: bool) -> None: ...

    def cleared(self, url: str) -> None: ...

    def gone(self, url: str) -> None: ...


class BlockIndex:
    def __init__(self, deltas: Deltas) -> None:
        self.deltas = deltas
        self._held: dict[str, tuple[set[int], set[int]]] = {}  # url → (on the GPU, off it)

    def follow(self, url: str) -> None:
        """Starts an endpoint with nothing held (gateways learn it publishes); no change if already followed."""
        if url not in self._held:
            self._held[url] = set(), set()
            self.deltas.cleared(url)

    def store(self, url: str, hashes: list[int], cpu: bool = False) -> None:
        self.follow(url)
        self._held[url][cpu].update(hashes)
        self.deltas.stored(url, hashes, cpu)

    def remove(self, url: str, hashes: list[int], cpu: bool = False) -> None:
        self.follow(url)
        self._held[url][cpu].difference_update(hashes)
        self.deltas.removed(url, hashes, cpu)

    def clear(self, url: str) -> None:
        """The replica holds nothing (AllBlocksCleared, or its engine restarted)."""
        held = self._held.setdefault(url, (set(), set()))
        held[0].clear()
        held[1].clear()
        self.deltas.cleared(url)

    def drop(self, url: str) -> None:
        """The replica is followed no more."""
        if self._held.pop(url, None) is not None:
            self.deltas.gone(url)

    def urls(self) -> list[str]:
        return sorted(self._held)

    def held(self, url: str) -> tuple[set[int], set[int]]:
        """(on the GPU, off it) for one followed endpoint; empty sets for another."""
        return self._held.get(url) or (set(), set())

    def holders(self, block: int) -> Iterator[tuple[str, bool]]:
        """(url, off the GPU) for each replica holding `block` (for tests and debugging; a scan)."""
        for url, (gpu, cpu) in self._held.items():
            if block in gpu:
                yield url, False
            if block in cpu:
                yield url, True

    def __len__(self) -> int:
        """Blocks held, counted once per replica and tier."""
        return sum(len(gpu) + len(cpu) for gpu, cpu in self._held.values())
