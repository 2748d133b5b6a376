"""vLLM's block pool (vllm/v1/core/block_pool.py) for one KV-cache group: blocks with reference counts,
the prefix cache (block hash -> blocks), and the free queue whose cached blocks are evicted least
recently freed first. The events vLLM would publish are collected in `events`.

The free queue is kept as vLLM orders it without a linked list of every block: freed blocks without a
hash go to its front and are reused first, cached ones to its back in the order freed, so it is always
"the uncached free blocks, then the cached free blocks oldest first": a count and an ordered dict."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

from iir_common.kv_blocks import BlockHasher
from iir_common.kv_events.structs import MEDIUM_GPU, AllBlocksCleared, BlockRemoved, KVEvent


class Block:
    __slots__ = ("block_hash", "ref")

    def __init__(self) -> None:
        self.block_hash: bytes | None = None
        self.ref = 1


class BlockPool:
    def __init__(self, num_gpu_blocks: int, events: bool = True) -> None:
        if num_gpu_blocks < 2:
            raise ValueError("the pool needs at least two blocks (vLLM reserves one as the null block)")
        self.total = num_gpu_blocks - 1  # the null block is never free
        self._free_uncached = self.total
        self._evictable: OrderedDict[Block, None] = OrderedDict()
        self._cached: dict[bytes, list[Block]] = {}
        self.records_events = events
        self.events: list[KVEvent] = []

    @property
    def num_free(self) -> int:
        return self._free_uncached + len(self._evictable)

    @property
    def usage(self) -> float:
        """vLLM's `kv_cache_usage_perc`: the share of blocks not free (cached free blocks count as free)."""
        return 1.0 - self.num_free / self.total

    @property
    def num_cached(self) -> int:
        """Distinct block hashes in the prefix cache."""
        return len(self._cached)

    def lookup(self, hashes: Sequence[bytes]) -> list[Block]:
        """The cached blocks of the longest prefix of `hashes` (vLLM's `find_longest_cache_hit`)."""
        hit: list[Block] = []
        cached = self._cached
        for h in hashes:
            blocks = cached.get(h)
            if not blocks:
                break
            hit.append(blocks[0])
        return hit

    def touch(self, blocks: Iterable[Block]) -> None:
        """Takes a reference on hit blocks, taking the free ones out of the eviction queue."""
        for block in blocks:
            if block.ref == 0:
                del self._evictable[block]
            block.ref += 1

    def allocate(self, count: int) -> list[Block]:
        """`count` blocks from the front of the free queue, evicting cached ones (BlockRemoved) when the
        uncached free blocks run out."""
        if count > self.num_free:
            raise ValueError(f"cannot get {count} free blocks from the pool")
        fresh = min(count, self._free_uncached)
        self._free_uncached -= fresh
        out = [Block() for _ in range(fresh)]
        for _ in range(count - fresh):
            block, _ = self._evictable.popitem(last=False)
            self._evict(block)
            block.ref = 1
            out.append(block)
        return out

    def _evict(self, block: Block) -> None:
        h = block.block_hash
        assert h is not None
        same = self._cached[h]
        same.remove(block)
        if not same:
            del self._cached[h]
        block.block_hash = None
        if self.records_events:
            self.events.append(BlockRemoved(block_hashes=[BlockHasher.external(h)], medium=MEDIUM_GPU, group_idx=0))

    def insert(self, block: Block, block_hash: bytes) -> None:
        """Makes a full block findable by its hash (a second block of the same hash is kept too, as vLLM
        keeps one when two requests computed the same block)."""
        block.block_hash = block_hash
        self._cached.setdefault(block_hash, []).append(block)

    def free(self, blocks: Iterable[Block]) -> None:
        """Drops a reference on each block, in the order given (vLLM frees a request's blocks tail
        first, so its tail is evicted first)."""
        for block in blocks:
            block.ref -= 1
            if block.ref == 0:
                if block.block_hash is None:
                    self._free_uncached += 1
                else:
                    self._evictable[block] = None

    def reset(self) -> bool:
        """Forgets every hash (AllBlocksCleared); refused while any block is held, as vLLM refuses it."""
        if self.num_free != self.total:
            return False
        for block in self._evictable:
            block.block_hash = None
        self._cached.clear()
        self._evictable.clear()
        self._free_uncached = self.total
        if self.records_events:
            self.events.append(AllBlocksCleared())
        return True

    def take_events(self) -> list[KVEvent]:
        events, self.events = self.events, []
        return events
