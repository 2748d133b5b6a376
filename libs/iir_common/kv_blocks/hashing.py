"""vLLM's prefix-cache block hash (vllm/v1/core/kv_cache_utils.py, vllm/utils/hashing.py).

Block i's hash is `hash_fn((parent, tuple(tokens of block i), extra_keys))`, the first block's parent being
`NONE_HASH = hash_fn(PYTHONHASHSEED)`, or of "vllm-none-hash" when the engine runs without one (vLLM 0.32, for
its cryptographic algorithms); only full blocks are hashed. KV events carry a hash as the low 64 bits of
its digest read big-endian (`maybe_convert_block_hash` with VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES, the default).
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable, Sequence
from typing import Any

import cbor2

_MASK64 = (1 << 64) - 1
DEFAULT_SEED = "vllm-none-hash"  # vLLM's DEFAULT_NONE_HASH_SEED


def sha256(value: Any) -> bytes:
    return hashlib.sha256(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)).digest()


def sha256_cbor(value: Any) -> bytes:
    return hashlib.sha256(cbor2.dumps(value, canonical=True)).digest()


HASH_ALGOS: dict[str, Callable[[Any], bytes]] = {"sha256": sha256, "sha256_cbor": sha256_cbor}


class BlockHasher:
    """Hashes token ids into the chained block hashes one engine configuration computes.

    Defaults are vLLM's: `sha256`, 16-token blocks; `seed` is the engine's PYTHONHASHSEED (None: unset)."""

    def __init__(self, algo: str = "sha256", seed: str | None = None, block_size: int = 16) -> None:
        try:
            self.hash_fn = HASH_ALGOS[algo]
        except KeyError:
            raise ValueError(
                f"unknown prefix caching hash algorithm {algo!r}; known: {', '.join(HASH_ALGOS)}"
            ) from None
        if block_size < 1:
            raise ValueError("block_size must be positive")
        self.algo = algo
        self.block_size = block_size
        self.none_hash = self.hash_fn(DEFAULT_SEED if seed is None else seed)

    def block_hashes(
        self,
        token_ids: Sequence[int],
        extra_keys: tuple[Any, ...] | None = None,
        parent: bytes | None = None,
        start: int = 0,
    ) -> list[bytes]:
        """The hashes of the full blocks of `token_ids[start:]` (start on a block boundary), chained from
        `parent` (the block before `start`; None: the first block)."""
        size = self.block_size
        previous = parent or self.none_hash
        out = []
        hash_fn = self.hash_fn
        for begin in range(start, len(token_ids) - size + 1, size):
            previous = hash_fn((previous, tuple(token_ids[begin : begin + size]), extra_keys))
            out.append(previous)
        return out

    @staticmethod
    def external(block_hash: bytes) -> int:
        """The form KV events carry: the digest's low 64 bits, big-endian."""
        return int.from_bytes(block_hash, "big") & _MASK64

    def external_hashes(self, token_ids: Sequence[int], extra_keys: tuple[Any, ...] | None = None) -> list[int]:
        return [self.external(h) for h in self.block_hashes(token_ids, extra_keys)]
