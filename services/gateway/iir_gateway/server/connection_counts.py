"""Open connections per client address, counted over all the gateway's worker processes.

With several workers, a cap counted per process would let one address hold workers × cap sockets. The
workers share a file, mapped in memory: one row of counters per worker (the counter of an address is
at the CRC of the address), each row written by its worker alone, so no lock is taken per connection;
an address's count is the sum of its counter over the rows. A worker claims its row once, at start,
under a file lock, and takes over (zeroing it) a row whose process is gone, so a crashed worker's
connections do not count for ever. Two addresses whose CRCs collide share a counter: with 16,384 of
them, a rare and harmless undercount of the cap, never a leak.
"""

from __future__ import annotations

import mmap
import struct
import zlib
from collections import Counter
from pathlib import Path

from iir_gateway.workers import ROW_HEADER, TABLE_BASE, claim_row, rows_claimed

SLOTS = 16384
_COUNT = struct.Struct("<i")
_ROW = ROW_HEADER.size + SLOTS * _COUNT.size


class ConnectionCounts:
    """`open(address)` and `close(address)` return the address's open connections, all workers together.
    Without a shared file (one worker), the counts live in this process."""

    def __init__(self, path: Path | None = None) -> None:
        self._local: Counter[str] = Counter()
        self._mm: mmap.mmap | None = None
        self._row = 0
        if path is not None:
            self._mm, self._row = claim_row(path, _ROW)

    def _total(self, slot: int) -> int:
        mm = self._mm
        assert mm is not None
        offset = TABLE_BASE + ROW_HEADER.size + slot * _COUNT.size
        return sum(_COUNT.unpack_from(mm, offset + r * _ROW)[0] for r in range(rows_claimed(mm)))

    def _add(self, address: str, step: int) -> int:
        if self._mm is None:
            count = self._local[address] + step
            if count > 0:
                self._local[address] = count
            else:
                del self._local[address]
            return count
        slot = zlib.crc32(address.encode()) % SLOTS
        mine = TABLE_BASE + self._row * _ROW + ROW_HEADER.size + slot * _COUNT.size
        _COUNT.pack_into(self._mm, mine, _COUNT.unpack_from(self._mm, mine)[0] + step)
        return self._total(slot)

    def open(self, address: str) -> int:
        return self._add(address, 1)

    def close(self, address: str) -> int:
        return self._add(address, -1)
