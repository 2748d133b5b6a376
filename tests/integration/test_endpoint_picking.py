"""Saturation queueing and vLLM load figures, through real gateway, registry and simulated vLLM processes."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from iir_dev.stack import Stack
from tests.conftest import STATIC_KEY

HEADERS = {"Authorization": f"Bearer {STATIC_KEY}"}


def slow_chat(url: str, max_tokens: int = 3, stream: bool = False) -> httpx.Response:
    body = {
        "model": "local/slow",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": max_tokens,
        "stream": stream,
    }
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=HEADERS, timeout=20)


def test_saturated_replica_queues_one_request_and_refuses_the_next_with_retry_after(stack: Stack) -> None:
    replica = stack.start_gateway_replica(
        "gateway-saturating",
        env={"IIR_ENDPOINT_MAX_OUTSTANDING": "1", "IIR_QUEUE_MAX": "1", "IIR_QUEUE_TIMEOUT_S": "10"},
    )
    with ThreadPoolExecutor(3) as pool:
        running = pool.submit(slow_chat, replica)
        time.sleep(0.3)
        queued = pool.submit(slow_chat, replica)
        time.sleep(0.3)
        refused = slow_chat(replica)
        assert refused.status_code == 429, refused.text
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "model_saturated"
        assert running.result().status_code == 200
        assert queued.result().status_code == 200  # it ran once the first one finished


def test_vllm_load_is_scraped_by_the_registry_and_pushed_to_the_gateway(stack: Stack, slow_sim: str) -> None:
    # A streamed request long enough (12 tokens at 4/s) to be seen running by a scrape.
    done = threading.Event()
    worker = threading.Thread(target=lambda: (slow_chat(stack.gateway_url, max_tokens=12, stream=True), done.set()))
    worker.start()
    pattern = re.compile(rf'iir_gateway_endpoint_running{{endpoint="{re.escape(slow_sim)}"}} ([0-9.]+)')
    seen = 0.0
    while not done.is_set() and not seen:
        match = pattern.search(httpx.get(stack.metrics_url).text)
        seen = float(match.group(1)) if match else 0.0
        time.sleep(0.1)
    worker.join()
    assert seen >= 1.0, "the gateway never learnt that the slow replica was running a request"
