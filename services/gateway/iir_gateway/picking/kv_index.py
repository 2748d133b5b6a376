"""The blocks each replica's KV cache holds, as the registry pushes them (KV_BLOCKS on the Watch stream): one
index per gateway worker, asked for the longest cached prefix of a request on each replica.

Each endpoint gets a bit; a block hash maps to the bits of the replicas holding it (one dict per tier), so a
request's prefix is matched on every replica at once. Blocks are looked up in growing chunks with C-level
`map`; a chunk every replica still in holds costs one C pass over its masks, and a replica dropping out is
found with `list.index`, so Python steps are per replica dropping out, not per block. The lookup stops once
no replica is left. A per-endpoint set of its hashes makes forgetting or clearing one replica proportional
to what it holds, not to the index.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from functools import reduce
from operator import or_

from iir.v1 import registry_pb2


class _Endpoint:
    __slots__ = ("bit", "cpu", "gpu")

    def __init__(self, bit: int) -> None:
        self.bit = bit
        self.gpu: set[int] = set()
        self.cpu: set[int] = set()


def _add(table: dict[int, int], hashes: set[int], bit: int) -> None:
    # Blocks no other replica holds (most of them) go in at C speed; a Python step only for shared ones.
    fresh = hashes.difference(table)  # C: looks each up in the dict (`- table.keys()` would walk the dict)
    table.update(dict.fromkeys(fresh, bit))
    if len(fresh) < len(hashes):
        for h in hashes - fresh:
            table[h] |= bit


def _discard(table: dict[int, int], hashes: set[int], bit: int) -> None:
    keep = ~bit
    get = table.get
    for h in hashes:
        mask = get(h)
        if mask is not None:
            mask &= keep
            if mask:
                table[h] = mask
            else:
                del table[h]


def _drop_outs(masks: list[int | None], alive: int, start: int, ends: dict[int, int]) -> int:
    """Walks a chunk's masks (block i at `start + i`) from one replica dropping out to the next, with
    C-level `list.index`; records each dropped bit's prefix length in `ends`; the bits still alive."""
    pending = {m for m in masks if (m or 0) & alive != alive}
    pos = 0
    while pending:
        first = len(masks)
        for m in pending:
            with contextlib.suppress(ValueError):  # not after pos: it is behind us
                first = min(first, masks.index(m, pos))
        if first == len(masks):
            break
        mask = masks[first]
        lost = alive & ~(mask or 0)
        alive &= mask or 0
        while lost:
            low = lost & -lost
            ends[low] = start + first
            lost ^= low
        pos = first + 1
        pending = {m for m in pending if (m or 0) & alive != alive}
    return alive


class KvIndex:
    FIRST_CHUNK = 16
    MAX_CHUNK = 256

    def __init__(self) -> None:
        self._endpoints: dict[str, _Endpoint] = {}
        self._free: list[int] = []  # bits of forgotten endpoints, reused lowest first
        self._next_bit = 1
        self._gpu: dict[int, int] = {}  # block hash → bits of the replicas holding it on the GPU
        self._cpu: dict[int, int] = {}  # ... off the GPU (CPU or storage offloading)

    def reset(self) -> None:
        """Forgets everything (a snapshot follows: the registry's whole index)."""
        self._endpoints, self._free, self._next_bit = {}, [], 1
        self._gpu, self._cpu = {}, {}

    def apply(self, updates: Sequence[registry_pb2.KvBlockUpdate]) -> None:
        """One KV_BLOCKS event: per endpoint, cleared first, then removed, then stored."""
        for u in updates:
            if u.gone:
                self.forget(u.url)
                continue
            ep = self._endpoint(u.url)
            if u.cleared:
                self._clear(ep)
            if u.removed:
                gone = ep.gpu.intersection(u.removed)  # what it held: the others' bits are left alone
                _discard(self._gpu, gone, ep.bit)
                ep.gpu -= gone
            if u.removed_cpu:
                gone = ep.cpu.intersection(u.removed_cpu)
                _discard(self._cpu, gone, ep.bit)
                ep.cpu -= gone
            if u.stored:
                new = set(u.stored) - ep.gpu
                _add(self._gpu, new, ep.bit)
                ep.gpu |= new
            if u.stored_cpu:
                new = set(u.stored_cpu) - ep.cpu
                _add(self._cpu, new, ep.bit)
                ep.cpu |= new

    def publishing(self, url: str) -> bool:
        """Whether the registry follows the endpoint's KV events (it may hold nothing yet)."""
        return url in self._endpoints

    def match_lengths(self, hashes: Sequence[int], urls: Sequence[str], cpu: bool = False) -> list[int]:
        """Per url, how many leading blocks of `hashes` the endpoint holds on its GPU (with `cpu`: on its GPU
        or off it); 0 for an endpoint not followed."""
        bits = [ep.bit if (ep := self._endpoints.get(u)) is not None else 0 for u in urls]
        alive = reduce(or_, bits, 0)
        get = self._get_any if cpu else self._gpu.get
        if not hashes or not (get(hashes[0]) or 0) & alive:  # no replica holds the first block (a new prompt)
            return [0] * len(bits)
        ends: dict[int, int] = {}  # bit → its prefix length, once it dropped out
        n, start, step = len(hashes), 0, self.FIRST_CHUNK
        while alive and start < n:
            chunk = hashes[start : start + step]
            masks = list(map(get, chunk))
            # The common case, every replica still in holding the whole chunk, is one C pass over its masks.
            if any((m or 0) & alive != alive for m in set(masks)):
                alive = _drop_outs(masks, alive, start, ends)
            start += len(chunk)
            step = min(step * 2, self.MAX_CHUNK)
        return [ends.get(b, n) if b else 0 for b in bits]

    def _get_any(self, block: int) -> int | None:
        gpu, cpu = self._gpu.get(block), self._cpu.get(block)
        return cpu if gpu is None else gpu if cpu is None else gpu | cpu

    def forget(self, url: str) -> None:
        """Drops an endpoint and everything it held."""
        ep = self._endpoints.pop(url, None)
        if ep is not None:
            self._clear(ep)
            self._free.append(ep.bit)
            self._free.sort(reverse=True)

    def held(self, url: str) -> int:
        """Blocks the endpoint holds on its GPU."""
        ep = self._endpoints.get(url)
        return len(ep.gpu) if ep is not None else 0

    def urls(self) -> list[str]:
        return list(self._endpoints)

    def __len__(self) -> int:
        """Distinct blocks held somewhere, on either tier."""
        return len(self._gpu.keys() | self._cpu.keys()) if self._cpu else len(self._gpu)

    def _endpoint(self, url: str) -> _Endpoint:
        ep = self._endpoints.get(url)
        if ep is None:
            if self._free:
                bit = self._free.pop()
            else:
                bit, self._next_bit = self._next_bit, self._next_bit << 1
            ep = self._endpoints[url] = _Endpoint(bit)
        return ep

    def _clear(self, ep: _Endpoint) -> None:
        _discard(self._gpu, ep.gpu, ep.bit)
        _discard(self._cpu, ep.cpu, ep.bit)
        ep.gpu.clear()
        ep.cpu.clear()
