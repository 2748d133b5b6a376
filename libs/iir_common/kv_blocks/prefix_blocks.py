"""A request's KV blocks (token count and chained block hashes), with the hashes of shared prefixes kept.

Hashing is the costly part (a few µs a block: 25 ms for a 50k-token context), so each request leaves, at every
piece boundary of its prompt, a key (a running fingerprint of the pieces so far) naming how many of its block
hashes that prefix fixes. The next request sharing those pieces hashes only what follows them."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from iir_common.kv_blocks.hashing import BlockHasher
from iir_common.kv_blocks.prompt_tokenizer import PromptTokenizer


@dataclass(frozen=True)
class Blocks:
    token_ids: list[int]
    # Full blocks only, as the engine hashes them; `external` as its KV events carry them.
    hashes: list[bytes]
    external: list[int]

    @property
    def tokens(self) -> int:
        return len(self.token_ids)


class PrefixBlocks:
    def __init__(self, tokenizer: PromptTokenizer, hasher: BlockHasher, cache_entries: int = 200_000) -> None:
        self.tokenizer = tokenizer
        self.hasher = hasher
        self.cache_entries = cache_entries
        # fingerprint of the leading pieces → (that prefix's token count, a hash list holding its blocks first)
        self._chains: OrderedDict[int, tuple[int, list[bytes], list[int]]] = OrderedDict()

    def chat(
        self, messages: Sequence[Any], tools: Sequence[Any] | None = None, extra_keys: tuple[Any, ...] | None = None
    ) -> Blocks:
        return self.of_pieces(self.tokenizer.chat_pieces(messages, tools), extra_keys)

    def completion(self, prompt: str, extra_keys: tuple[Any, ...] | None = None) -> Blocks:
        ids = self.tokenizer.prompt_ids(prompt)
        hashes = self.hasher.block_hashes(ids, extra_keys)
        return Blocks(ids, hashes, [BlockHasher.external(h) for h in hashes])

    def of_pieces(self, pieces: Sequence[str], extra_keys: tuple[Any, ...] | None = None) -> Blocks:
        tokenizer, size, chains = self.tokenizer, self.hasher.block_size, self._chains
        fingerprints = []
        fingerprint = hash(extra_keys)
        known: tuple[int, list[bytes], list[int]] | None = None
        for piece in pieces:
            fingerprint = hash((fingerprint, piece))
            fingerprints.append(fingerprint)
            hit = chains.get(fingerprint)
            if hit is not None:
                known = hit
                chains.move_to_end(fingerprint)
        lengths: list[int] = []
        ids = tokenizer.pieces_ids(pieces, lengths)
        done = known[0] // size if known is not None else 0
        hashes = known[1][:done] if known is not None else []
        external = known[2][:done] if known is not None else []
        fresh = self.hasher.block_hashes(ids, extra_keys, parent=hashes[-1] if hashes else None, start=done * size)
        hashes += fresh
        external += [BlockHasher.external(h) for h in fresh]
        count = 0
        for length, fp in zip(lengths, fingerprints, strict=True):
            count += length
            if fp not in chains:
                chains[fp] = (count, hashes, external)
        while len(chains) > self.cache_entries:
            chains.popitem(last=False)
        return Blocks(ids, hashes, external)
