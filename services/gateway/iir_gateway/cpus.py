"""How many gateway workers a pod can run: one per CPU the process may use (its affinity, bounded by
its cgroup's CPU quota, i.e. the pod's CPU limit), and no more than its memory limit holds at
`WORKER_MIB` each, so `IIR_GATEWAY_WORKERS=0` on a big node without a CPU limit does not start a worker
per node core and run out of memory."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")
WORKER_MIB = 128  # a worker's resident memory, with room (about 100 MiB measured)


def _limit(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def auto_workers(cgroup: Path = CGROUP) -> int:
    workers = len(os.sched_getaffinity(0))
    cpu_max = _limit(cgroup / "cpu.max")
    if cpu_max and not cpu_max.startswith("max"):
        quota, period = cpu_max.split()[:2]
        workers = min(workers, math.ceil(int(quota) / int(period)))
    memory_max = _limit(cgroup / "memory.max")
    if memory_max and memory_max != "max":
        workers = min(workers, int(memory_max) // (WORKER_MIB * 2**20))
    return max(1, workers)
