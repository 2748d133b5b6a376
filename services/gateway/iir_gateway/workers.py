"""What the gateway's worker processes share: a directory the parent makes before it starts them, for
Prometheus' multiprocess files (so a scrape of any worker reads all of them), and tables mapped in memory
with a row per worker (the connection counts per client address, the failed-auth fallback counts). One
worker shares nothing and keeps them in memory."""

from __future__ import annotations

import atexit
import fcntl
import mmap
import os
import shutil
import struct
import tempfile
from pathlib import Path

SHARED_DIR_ENV = "IIR_GATEWAY_SHARED_DIR"  # set by the parent for its workers, not a setting
PROMETHEUS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

MAX_ROWS = 256
ROW_HEADER = struct.Struct("<q")  # a row's owner pid
_TOP = struct.Struct("<i")  # at a table's start: how many rows were ever claimed
TABLE_BASE = 8


def share_between(workers: int) -> None:
    """Before the workers start: a fresh directory (stale files would skew the metrics), removed at exit."""
    if workers <= 1:
        return
    path = tempfile.mkdtemp(prefix="iir-gateway-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    os.environ[SHARED_DIR_ENV] = path
    os.environ[PROMETHEUS_DIR_ENV] = path


def shared_dir() -> Path | None:
    value = os.environ.get(SHARED_DIR_ENV)
    return Path(value) if value else None


def metrics_shared() -> bool:
    return bool(os.environ.get(PROMETHEUS_DIR_ENV))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_row(path: Path, row_size: int) -> tuple[mmap.mmap, int]:
    """Maps the table at `path` (rows of `row_size` bytes, the first ROW_HEADER.size of each its owner's
    pid) and claims a row for this process, under a file lock: a row whose process is gone is taken over
    and zeroed (so a crashed worker's counts do not stay), else a new one."""
    size = TABLE_BASE + MAX_ROWS * row_size
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)  # sparse: pages are only made as counters are used
            mm = mmap.mmap(fd, size)
            top = rows_claimed(mm)
            row = next(
                (r for r in range(top) if not _alive(ROW_HEADER.unpack_from(mm, TABLE_BASE + r * row_size)[0])),
                top,
            )
            if row >= MAX_ROWS:
                raise RuntimeError(f"more than {MAX_ROWS} gateway workers share {path}")
            start = TABLE_BASE + row * row_size
            mm[start : start + row_size] = bytes(row_size)
            ROW_HEADER.pack_into(mm, start, os.getpid())
            if row == top:
                _TOP.pack_into(mm, 0, top + 1)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    return mm, row


def rows_claimed(mm: mmap.mmap) -> int:
    return int(_TOP.unpack_from(mm, 0)[0])
