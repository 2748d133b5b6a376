"""Saturation queueing and vLLM load figures, through real gateway, registry and simulated vLLM processes."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from iir_dev.stack import Stack
from tests.conftest import STATIC_KEY
from tests.waiting import wait_for

HEADERS = {"Authorization": f"Bearer {STATIC_KEY}"}


def slow_chat(url: str, max_tokens: int = 3, stream: bool = False) -> httpx.Response:
    body = {
        "model": "local/slow",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": max_tokens,
        "stream": stream,
    }
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=HEADERS, timeout=20)


def _gauge(metrics_url: str, name: str) -> float:
    """The gauge `name` at `metrics_url`, summed over its series."""
    values = re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+]+)$", httpx.get(metrics_url).text, re.M)
    return sum(map(float, values))


def test_saturated_replica_queues_one_request_and_refuses_the_next_with_retry_after(
    stack: Stack, slow_sim: str
) -> None:
    replica = stack.start_gateway_replica(
        "gateway-saturating",
        env={"IIR_ENDPOINT_MAX_OUTSTANDING": "1", "IIR_QUEUE_MAX": "1", "IIR_QUEUE_TIMEOUT_S": "10"},
    )
    metrics = stack.replica_metrics[replica]
    with ThreadPoolExecutor(3) as pool:
        # 12 tokens at 4/s: the replica's one slot stays taken while the next two arrive.
        running = pool.submit(slow_chat, replica, 12)
        wait_for(lambda: _gauge(f"{slow_sim}/metrics", "vllm:num_requests_running") >= 1, what="the first to run")
        queued = pool.submit(slow_chat, replica)
        wait_for(lambda: _gauge(metrics, "iir_gateway_queue_depth") >= 1, what="the second to be queued")
        refused = slow_chat(replica)
        assert refused.status_code == 429, refused.text
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "model_saturated"
        assert running.result().status_code == 200
        assert queued.result().status_code == 200  # it ran once the first one finished


def test_vllm_load_is_scraped_by_the_registry_and_pushed_to_the_gateway(stack: Stack, slow_sim: str) -> None:
    # A streamed request long enough (12 tokens at 4/s) to be seen running by a scrape.
    done = threading.Event()

    def stream() -> None:
        slow_chat(stack.gateway_url, max_tokens=12, stream=True)
        done.set()

    worker = threading.Thread(target=stream)
    worker.start()
    pattern = re.compile(rf'iir_gateway_endpoint_running{{endpoint="{re.escape(slow_sim)}"}} ([0-9.]+)')
    seen = 0.0
    while not done.is_set() and not seen:
        match = pattern.search(httpx.get(stack.metrics_url).text)
        seen = float(match.group(1)) if match else 0.0
        time.sleep(0.1)
    worker.join()
    assert seen >= 1.0, "the gateway never learnt that the slow replica was running a request"
