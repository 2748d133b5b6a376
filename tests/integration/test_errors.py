"""A client that goes away stops the upstream's generation: this needs a real socket to close, so it runs
against the stack's processes (the other error cases are tests/gateway/test_errors.py, in process)."""

from __future__ import annotations

import threading

import httpx
import pytest

from iir_dev.stack import Stack
from tests.waiting import wait_for

MESSAGES = [{"role": "user", "content": "hi"}]


def test_client_disconnect_cancels_the_upstream_request(stack: Stack, api_key: str, slow_sim: str) -> None:
    def running() -> float:
        metrics = httpx.get(f"{slow_sim}/metrics").text
        line = next(ln for ln in metrics.splitlines() if ln.startswith("vllm:num_requests_running"))
        return float(line.rsplit(" ", 1)[1])

    assert running() == 0
    with httpx.stream(
        "POST",
        f"{stack.gateway_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {api_key}"},
        json={"model": "local/slow", "messages": MESSAGES, "max_tokens": 40, "stream": True},
    ) as resp:
        lines = resp.iter_lines()  # keep it: dropping the iterator closes the connection
        next(lines)
        assert running() == 1
    assert wait_for(lambda: running() == 0, timeout=3)  # the whole generation would take 10 s

    # Not streamed: the client gives up after two seconds, and the generation stops with it.
    def give_up() -> None:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{stack.gateway_url}/v1/chat/completions",
                headers={"Authorization": f"Bearer {api_key}"},
                json={"model": "local/slow", "messages": MESSAGES, "max_tokens": 40},
                timeout=httpx.Timeout(10, read=2),
            )

    client = threading.Thread(target=give_up)
    client.start()
    assert wait_for(lambda: running() == 1, timeout=2)
    client.join()
    assert wait_for(lambda: running() == 0, timeout=3)
