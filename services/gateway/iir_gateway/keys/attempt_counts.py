"""Failed-auth attempts per client bucket, counted over all the gateway's worker processes.

Redis counts attempts for every worker and replica; this table is what decides when Redis cannot answer
(a connect timeout under a flood of guesses), so that the limit is then per pod, never per worker (with
four workers, a count per process would let an address make four times the limit). Like the connection
counts (server/connection_counts.py), the workers share a mapped file with a row per worker, each written
by its worker alone; a slot (at the CRC of the bucket) holds a fixed window's number and the attempts
in it, and a bucket's count is the sum over the rows whose slot is in the current window. Buckets whose
CRCs collide share a count: a rare early lockout of a fallback, never a missed one.
"""

from __future__ import annotations

import mmap
import struct
import time
import zlib
from pathlib import Path

from iir_gateway.workers import ROW_HEADER, TABLE_BASE, claim_row, rows_claimed

SLOTS = 4096
_SLOT = struct.Struct("<qi")  # window number, attempts in it
_ROW = ROW_HEADER.size + SLOTS * _SLOT.size


class AttemptCounts:
    """`add(bucket, step)` returns the bucket's attempts in the current window, all workers together.
    Without a shared file (one worker), the counts live in this process."""

    def __init__(self, window_s: int, path: Path | None = None) -> None:
        self._window = max(1, window_s)
        self._local: dict[str, tuple[int, int]] = {}
        self._mm: mmap.mmap | None = None
        self._row = 0
        if path is not None:
            self._mm, self._row = claim_row(path, _ROW)

    def add(self, bucket: str, step: int = 1) -> int:
        window = int(time.time() // self._window)
        mm = self._mm
        if mm is None:
            seen, count = self._local.get(bucket, (window, 0))
            count = max(0, (count if seen == window else 0) + step)
            if len(self._local) > 100_000:
                self._local.clear()
            self._local[bucket] = (window, count)
            return count
        slot = zlib.crc32(bucket.encode()) % SLOTS
        offset = TABLE_BASE + ROW_HEADER.size + slot * _SLOT.size
        mine = offset + self._row * _ROW
        seen, count = _SLOT.unpack_from(mm, mine)
        _SLOT.pack_into(mm, mine, window, max(0, (count if seen == window else 0) + step))
        total = 0
        for r in range(rows_claimed(mm)):
            seen, count = _SLOT.unpack_from(mm, offset + r * _ROW)
            if seen == window:
                total += count
        return total
