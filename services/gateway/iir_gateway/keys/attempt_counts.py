"""Failed-auth attempts per client bucket, counted over all the gateway's worker processes.

Redis counts attempts for every worker and replica; this table is what decides when Redis cannot answer
(a connect timeout under a flood of guesses), so that the limit is then per pod, never per worker (with
four workers, a count per process would let an address make four times the limit). Like the connection
counts (api/connection_counts.py), the workers share a mapped file with a row per worker, each written
by its worker alone; a slot (at the CRC of the bucket) holds a fixed window's number and the attempts
in it, and a bucket's count is the sum over the rows whose slot is in the current window. Buckets whose
CRCs collide share a count: a rare early lockout of a fallback, never a missed one.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import time
import zlib
from pathlib import Path

SLOTS = 4096
MAX_ROWS = 256
_HEADER = struct.Struct("<q")  # the row's owner pid
_SLOT = struct.Struct("<qi")  # window number, attempts in it
_ROW = _HEADER.size + SLOTS * _SLOT.size
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


class AttemptCounts:
    """`add(bucket, step)` returns the bucket's attempts in the current window, all workers together.
    Without a shared file (one worker), the counts live in this process."""

    def __init__(self, window_s: int, path: Path | None = None) -> None:
        self._window = max(1, window_s)
        self._local: dict[str, tuple[int, int]] = {}
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
                    os.ftruncate(fd, size)  # sparse: pages are only made as slots are used
                mm = mmap.mmap(fd, size)
                top = _TOP.unpack_from(mm, 0)[0]
                row = next((r for r in range(top) if not _alive(_HEADER.unpack_from(mm, _BASE + r * _ROW)[0])), top)
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
        offset = _BASE + _HEADER.size + slot * _SLOT.size
        mine = offset + self._row * _ROW
        seen, count = _SLOT.unpack_from(mm, mine)
        _SLOT.pack_into(mm, mine, window, max(0, (count if seen == window else 0) + step))
        total = 0
        for r in range(_TOP.unpack_from(mm, 0)[0]):
            seen, count = _SLOT.unpack_from(mm, offset + r * _ROW)
            if seen == window:
                total += count
        return total
