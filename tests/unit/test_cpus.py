"""`IIR_GATEWAY_WORKERS=0`: one worker per CPU the pod may really use, within its memory limit."""

from __future__ import annotations

import os
from pathlib import Path

from iir_gateway.cpus import auto_workers


def test_cpu_quota_and_memory_limit_bound_the_affinity(tmp_path: Path) -> None:
    cores = len(os.sched_getaffinity(0))
    assert auto_workers(tmp_path) == cores  # no cgroup limits at all
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (tmp_path / "memory.max").write_text("max\n")
    assert auto_workers(tmp_path) == cores
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # a 1.5-CPU limit: two workers
    assert auto_workers(tmp_path) == min(cores, 2)
    (tmp_path / "cpu.max").write_text("10000 100000\n")  # a tenth of a CPU: still one
    assert auto_workers(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (tmp_path / "memory.max").write_text(str(300 * 2**20))  # 300 MiB hold two workers of 128 MiB
    assert auto_workers(tmp_path) == min(cores, 2)
    (tmp_path / "memory.max").write_text(str(64 * 2**20))
    assert auto_workers(tmp_path) == 1
