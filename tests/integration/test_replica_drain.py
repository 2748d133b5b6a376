"""The vLLM pods' preStop hook, run as Kubernetes runs it (`python3 -c …`) against a simulated vLLM: it
returns once the replica's requests are done, at once when it is idle, and never later than its timeout."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from iir_dev import datastores
from iir_operator.drain import pre_stop
from tests.conftest import start_sim


@pytest.fixture(scope="module")
def sim() -> Iterator[int]:
    port = datastores.free_port()
    proc = start_sim(port, models="m", tokens_per_s="2")
    yield port
    proc.terminate()
    proc.wait(10)


def drain(port: int, timeout_s: int) -> float:
    """Runs the hook's command; returns how long it took."""
    command = pre_stop(port, timeout_s)["exec"]["command"]  # type: ignore[index]
    started = time.monotonic()
    subprocess.run([sys.executable, *command[1:]], check=True, timeout=timeout_s + 30)  # the image has python3
    return time.monotonic() - started


def stream(port: int, tokens: int, done: list[float]) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "go"}], "max_tokens": tokens, "stream": True}
    with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=60) as resp:
        for _ in resp.iter_lines():
            pass
    done.append(time.monotonic())


def test_the_hook_waits_for_a_stream_in_flight(sim: int) -> None:
    done: list[float] = []
    worker = threading.Thread(target=stream, args=(sim, 12, done))  # 6 s at 2 tokens/s
    worker.start()
    time.sleep(0.5)
    started = time.monotonic()
    drain(sim, 60)
    ended = time.monotonic()
    worker.join()
    assert done and done[0] <= ended, "the hook returned while the stream was still running"
    assert ended - started >= 4.5


def test_the_hook_returns_soon_when_idle_and_by_its_timeout(sim: int) -> None:
    assert drain(sim, 60) < 5  # the 3 s for the endpoint change to spread, then nothing to wait for
    done: list[float] = []
    worker = threading.Thread(target=stream, args=(sim, 16, done))  # 8 s
    worker.start()
    time.sleep(0.5)
    took = drain(sim, 5)
    assert 4.5 <= took < 8 and not done  # gave up at its timeout, the stream still running
    worker.join()
