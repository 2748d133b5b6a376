"""Connection counts per client address shared by worker processes through one mapped file."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

from iir_gateway.server.connection_counts import ConnectionCounts


def _hold(path: str, address: str, n: int, ready: Any, done: Any) -> None:
    counts = ConnectionCounts(Path(path))
    for _ in range(n):
        counts.open(address)
    ready.set()
    done.wait(10)


def test_in_one_process_the_counts_are_its_own() -> None:
    counts = ConnectionCounts()
    assert [counts.open("10.0.0.1") for _ in range(3)] == [1, 2, 3]
    assert counts.open("10.0.0.2") == 1
    assert counts.close("10.0.0.1") == 2


def test_workers_see_each_others_connections_and_a_dead_workers_are_dropped(tmp_path: Path) -> None:
    path = tmp_path / "connections"
    ctx = multiprocessing.get_context("spawn")
    ready, done = ctx.Event(), ctx.Event()
    other = ctx.Process(target=_hold, args=(str(path), "10.0.0.1", 4, ready, done))
    other.start()
    assert ready.wait(20)
    mine = ConnectionCounts(path)
    assert mine.open("10.0.0.1") == 5  # the other worker's four and this one
    assert mine.open("10.0.0.9") == 1
    assert mine.close("10.0.0.1") == 4
    done.set()
    other.join(10)
    # The other worker is gone; its replacement takes its row over, zeroed.
    replacement = ConnectionCounts(path)
    assert replacement.open("10.0.0.1") == 1
