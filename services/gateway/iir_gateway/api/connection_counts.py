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

import fcntl
import mmap
import os
import struct
import zlib
from collections import Counter
from pathlib import Path

SLOTS = 16384
MAX_ROWS = 256
_HEADER = struct.Struct("<q")  # the row's owner pid
_COUNT = struct.Struct("<i")
_ROW = _HEADER.size + SLOTS * _COUNT.size
_TOP = struct.Struct("<i")  # at the file's start: how many rows were ever claimed
_BASE = 8


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ConnectionCounts:
    """`open(address)` and `close(address)` return the address's open connections, all workers together.
    Without a shared file (one worker), the counts live in this process."""

    def __init__(self, path: Path | None = None) -> None:
        self._local: Counter[str] = Counter()
        self._mm: mmap.mmap | None = None
        self._row = 0
        if path is not None:
            self._map(path)

    def _map(self, path: Path) -> None:
        size = _BASE + MAX_ROWS * _ROW
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.fstat(fd).st_size < size:
                    os.ftruncate(fd, size)  # sparse: pages are only made as counters are used
                mm = mmap.mmap(fd, size)
                top = _TOP.unpack_from(mm, 0)[0]
                row = next(
                    (r for r in range(top) if not _alive(_HEADER.unpack_from(mm, _BASE + r * _ROW)[0])),
                    top,
                )
                if row >= MAX_ROWS:
                    raise RuntimeError(f"more than {MAX_ROWS} gateway workers share {path}")
                start = _BASE + row * _ROW
                mm[start : start + _ROW] = bytes(_ROW)
                _HEADER.pack_into(mm, start, os.getpid())
                if row == top:
                    _TOP.pack_into(mm, 0, top + 1)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        self._mm, self._row = mm, row

    def _total(self, slot: int) -> int:
        mm = self._mm
        assert mm is not None
        offset = _BASE + _HEADER.size + slot * _COUNT.size
        return sum(_COUNT.unpack_from(mm, offset + r * _ROW)[0] for r in range(_TOP.unpack_from(mm, 0)[0]))

    def _add(self, address: str, step: int) -> int:
        if self._mm is None:
            count = self._local[address] + step
            if count > 0:
                self._local[address] = count
            else:
                del self._local[address]
            return count
        slot = zlib.crc32(address.encode()) % SLOTS
        mine = _BASE + self._row * _ROW + _HEADER.size + slot * _COUNT.size
        _COUNT.pack_into(self._mm, mine, _COUNT.unpack_from(self._mm, mine)[0] + step)
        return self._total(slot)

    def open(self, address: str) -> int:
        return self._add(address, 1)

    def close(self, address: str) -> int:
        return self._add(address, -1)
