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
from tests.waiting import wait_for

RUNNING = "vllm:num_requests_running"
FINISHED = "vllm:request_success_total"


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


def metric(port: int, name: str) -> float:
    """The simulated replica's value of one Prometheus series."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def stream(port: int, tokens: int, stop: threading.Event) -> None:
    """A chat stream of exactly `tokens` tokens (one every 0.5 s), read until it ends or `stop` is set."""
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "go"}],
        "max_tokens": tokens,
        "ignore_eos": True,
        "stream": True,
    }
    with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=60) as resp:
        for _ in resp.iter_lines():
            if stop.is_set():
                return


def start_stream(port: int, tokens: int, stop: threading.Event) -> threading.Thread:
    """A stream in flight: running on the replica when this returns."""
    running = metric(port, RUNNING)
    worker = threading.Thread(target=stream, args=(port, tokens, stop))
    worker.start()
    wait_for(lambda: metric(port, RUNNING) > running, timeout=30, what="the stream running on the replica")
    return worker


def test_the_hook_waits_for_a_stream_in_flight(sim: int) -> None:
    finished = metric(sim, FINISHED)
    sent = time.monotonic()
    worker = start_stream(sim, 12, threading.Event())  # about 5 s
    drain(sim, 60)
    returned = time.monotonic()
    assert metric(sim, FINISHED) == finished + 1, "the hook returned while the stream was still running"
    assert returned - sent >= 4.5
    worker.join(30)


def test_the_hook_returns_soon_when_idle_and_by_its_timeout(sim: int) -> None:
    idle = drain(sim, 60)
    assert 3 <= idle < 30  # the 3 s for the endpoint change to spread, then nothing to wait for (not the 60 s)
    stop = threading.Event()
    worker = start_stream(sim, 200, stop)  # 100 s
    took = drain(sim, 5)
    still_running = metric(sim, RUNNING) > 0
    stop.set()
    worker.join(30)
    assert took >= 5 and still_running  # gave up at its timeout, the stream still running
    assert took < 30  # and did not wait for the stream
    wait_for(lambda: metric(sim, RUNNING) == 0, timeout=30, what="the abandoned stream ending on the replica")
