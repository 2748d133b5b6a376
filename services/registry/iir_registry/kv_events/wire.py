"""vLLM's KV event payloads (msgpack), decoded with structs declared as vLLM 0.32 declares them
(vllm/distributed/kv_events.py), and the older layout, where each event was a msgpack array too.

A block hash is an int (vLLM's default, `VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES`) or the digest's bytes; either
becomes the 64-bit int `maybe_convert_block_hash` makes: the digest's low 64 bits read big-endian.
"""

from __future__ import annotations

import msgspec

from iir_common.kv_events.structs import (
    MEDIUM_GPU,
    BlockRemoved,
    BlockStored,
    EventBatch,
    ExternalBlockHash,
    KVEventBatch,
)

_MASK64 = (1 << 64) - 1


# Before vLLM made events maps, each was an array tagged by its first element; later fields may be absent.
class _LegacyEvent(msgspec.Struct, array_like=True, omit_defaults=True, gc=False, tag=True):
    pass


class LegacyBlockStored(_LegacyEvent, tag="BlockStored"):
    block_hashes: list[ExternalBlockHash]
    parent_block_hash: ExternalBlockHash | None = None
    token_ids: list[int] = []
    block_size: int = 0
    lora_id: int | None = None
    medium: str | None = None


class LegacyBlockRemoved(_LegacyEvent, tag="BlockRemoved"):
    block_hashes: list[ExternalBlockHash]
    medium: str | None = None


class LegacyAllBlocksCleared(_LegacyEvent, tag="AllBlocksCleared"):
    pass


class LegacyKVEventBatch(EventBatch):
    events: list[LegacyBlockStored | LegacyBlockRemoved | LegacyAllBlocksCleared]


Stored = (BlockStored, LegacyBlockStored)
Removed = (BlockRemoved, LegacyBlockRemoved)
Batch = KVEventBatch | LegacyKVEventBatch

_decode = msgspec.msgpack.Decoder(KVEventBatch).decode
_decode_legacy = msgspec.msgpack.Decoder(LegacyKVEventBatch).decode


def decode_batch(payload: bytes) -> Batch:
    """One published payload; raises msgspec.DecodeError (a ValidationError among them) when it is neither."""
    try:
        return _decode(payload)
    except msgspec.ValidationError:
        return _decode_legacy(payload)


def block_ints(hashes: list[ExternalBlockHash]) -> list[int]:
    """The 64-bit form of each hash (an int from an older engine may be negative: its two's complement)."""
    try:
        if not hashes or min(hashes) >= 0:  # type: ignore[operator]
            return hashes  # type: ignore[return-value]  # ints already (msgpack's ints end at 2**64 - 1)
    except TypeError:  # bytes among them
        pass
    return [h & _MASK64 if type(h) is int else int.from_bytes(h[-8:], "big") for h in hashes]  # type: ignore[index]


def off_gpu(medium: str | None) -> bool:
    """Whether an event's `medium` names a tier below the GPU (CPU or storage offloading)."""
    return medium is not None and medium != MEDIUM_GPU
