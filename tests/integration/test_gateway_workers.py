"""A gateway of several worker processes on one port is one gateway: its metrics are the sum of all the
workers' (whichever one takes the scrape), and its connection cap per client address counts over all of
them."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from iir_dev.stack import Stack
from tests.conftest import SERVED

WORKERS = 2
CAP = 10


def workers_of(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


@pytest.fixture(scope="module")
def gateway(stack: Stack) -> Iterator[tuple[str, str]]:
    """(URL, metrics URL) of a gateway replica with two workers."""
    url = stack.start_gateway_replica(
        "gateway-workers", env={"IIR_GATEWAY_WORKERS": str(WORKERS), "IIR_MAX_CONNECTIONS_PER_CLIENT": str(CAP)}
    )
    pid = stack.processes["gateway-workers"].popen.pid
    deadline = time.monotonic() + 30
    while len(workers_of(pid)) < WORKERS and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(workers_of(pid)) == WORKERS
    time.sleep(1)  # both workers are through their start-up
    yield url, stack.replica_metrics[url]
    proc = stack.processes.pop("gateway-workers")
    proc.popen.terminate()
    proc.popen.wait(20)


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


async def _closed(conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> int:
    async def closed(reader: asyncio.StreamReader) -> bool:
        try:
            return await asyncio.wait_for(reader.read(), 1.0) == b""
        except TimeoutError:
            return False

    return sum(await asyncio.gather(*(closed(r) for r, _ in conns)))


async def _cap(port: int) -> tuple[int, int]:
    crowd = await _open(port, "127.0.4.1", CAP + 6)
    over = await _closed(crowd)
    for _, w in crowd:
        w.close()
    await asyncio.sleep(0.5)  # every worker saw its connections end
    again = await _open(port, "127.0.4.1", CAP)
    reopened = await _closed(again)
    for _, w in again:
        w.close()
    return over, reopened


def test_the_connection_cap_counts_over_all_workers(gateway: tuple[str, str]) -> None:
    url, _ = gateway
    over, reopened = asyncio.run(_cap(int(url.rsplit(":", 1)[1])))
    assert over == 6  # one address: CAP connections in all, whichever worker took each
    assert reopened == 0  # closed connections gave their slots back, in both workers
