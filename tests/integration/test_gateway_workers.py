"""A gateway of several worker processes on one port is one gateway: its metrics are the sum of all the
workers' (whichever one takes the scrape), and its connection cap per client address counts over all of
them."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from iir_dev.stack import Stack
from tests.conftest import SERVED
from tests.waiting import eventually, wait_for

WORKERS = 2
CAP = 10


def workers_of(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


@pytest.fixture(scope="module")
def gateway(stack: Stack) -> Iterator[tuple[str, str]]:
    """(URL, metrics URL) of a gateway replica with two workers, both through their start-up."""
    url = stack.start_gateway_replica(
        "gateway-workers",
        env={
            "IIR_GATEWAY_WORKERS": str(WORKERS),
            "IIR_MAX_CONNECTIONS_PER_CLIENT": str(CAP),
            "IIR_HEADER_TIMEOUT_S": "120",  # idle test connections stay open however slow the machine
        },
    )
    process = stack.processes["gateway-workers"]
    wait_for(lambda: len(workers_of(process.popen.pid)) == WORKERS, timeout=30, what="both workers")
    wait_for(
        lambda: process.log_path.read_text().count("Application startup complete.") == WORKERS,
        timeout=30,
        what="both workers through their start-up",
    )
    yield url, stack.replica_metrics[url]
    stack.processes.pop("gateway-workers")
    process.popen.terminate()
    process.popen.wait(20)


def served(metrics: str) -> float:
    pattern = r'^iir_gateway_requests_total\{method="POST",route="/v1/chat/completions",status="200"\} ([\d.e+]+)$'
    return sum(float(v) for v in re.findall(pattern, metrics, re.M))


def test_every_scrape_counts_every_worker(gateway: tuple[str, str], api_key: str) -> None:
    url, metrics_url = gateway
    body = {"model": f"local/{SERVED}", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    before = served(httpx.get(metrics_url).text)
    # Fresh connections, so the kernel hands them to either worker.
    for _ in range(40):
        r = httpx.post(
            f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {api_key}"}, timeout=20
        )
        assert r.status_code == 200, r.text
    scrapes = [served(httpx.get(metrics_url).text) - before for _ in range(8)]
    assert scrapes == [40] * 8


async def _open(port: int, source: str, n: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    return [await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)) for _ in range(n)]


async def _closed(conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]], at_least: int) -> int:
    """How many of `conns` the gateway closes: it waits for `at_least` of them (20 s at most), then half a
    second more for any beyond."""
    pending = {asyncio.ensure_future(reader.read()) for reader, _ in conns}  # b"" once the gateway closes
    closed = 0
    deadline = asyncio.get_running_loop().time() + 20
    while closed < at_least and pending:
        done, pending = await asyncio.wait(
            pending, timeout=deadline - asyncio.get_running_loop().time(), return_when=asyncio.FIRST_COMPLETED
        )
        if not done:
            break
        closed += len(done)
    done, pending = await asyncio.wait(pending, timeout=0.5) if pending else (set(), pending)
    for read in pending:
        read.cancel()
    return closed + len(done)


def _close(conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> None:
    for _, writer in conns:
        writer.close()


async def _all_kept(port: int) -> bool:
    """Whether CAP fresh connections from the crowd's address all stay open."""
    conns = await _open(port, "127.0.4.1", CAP)
    closed = await _closed(conns, 0)
    _close(conns)
    return closed == 0


async def _crowd(port: int) -> int:
    """How many of CAP + 6 connections from one address the gateway closes."""
    crowd = await _open(port, "127.0.4.1", CAP + 6)
    over = await _closed(crowd, 6)
    _close(crowd)
    return over


def test_the_connection_cap_counts_over_all_workers(gateway: tuple[str, str]) -> None:
    url, _ = gateway
    port = int(url.rsplit(":", 1)[1])
    assert asyncio.run(_crowd(port)) == 6  # one address: CAP connections in all, whichever worker took each
    # Closed connections gave their slots back, in both workers (once each has seen its connections end).
    asyncio.run(eventually(lambda: _all_kept(port), timeout=30))
