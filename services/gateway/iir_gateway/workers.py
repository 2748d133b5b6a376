"""What the gateway's worker processes share: a directory the parent makes before it starts them, for
Prometheus' multiprocess files (so a scrape of any worker reads all of them) and the connection counts
per client address. One worker shares nothing and keeps both in memory."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

SHARED_DIR_ENV = "IIR_GATEWAY_SHARED_DIR"  # set by the parent for its workers, not a setting
PROMETHEUS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


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
