"""The seed documents' client code, as they write it, against a running IIR.

Each snippet is the seed's own (only its base URL, key and model name stand for this stack's): the
onboarding guide (keys, `/infer`, models, registry refresh, chat), the LLM Inference System API
(`X-API-Key`, `/generate`, `/status`, `/result`, `/stream?api_key=`) and the Inference Gateway
(no `model`, `X-Request-ID`, `/healthz`, SSE).
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
import requests

from iir_dev.stack import Stack
from tests.browser import chromium
from tests.conftest import SERVED
from tests.waiting import wait_for


@pytest.fixture(scope="module")
def base(stack: Stack) -> str:
    return stack.gateway_url


def test_onboarding_guide(base: str) -> None:
    # "Registering an API Key" (from a trusted network, without a key)
    payload: dict[str, Any] = {"description": "dev test key", "priority": 10}
    r = requests.post(f"{base}/api/v1/apikeys", json=payload)
    print(r.json())  # {'api_key': '...', 'priority': 10}
    assert r.status_code == 201 and r.json()["priority"] == 10
    api_key = r.json()["api_key"]

    # "Using Your API Key"
    headers = {"Authorization": f"Bearer {api_key}"}
    r = requests.post(f"{base}/infer", json={"model": f"local/{SERVED}", "input": {"prompt": "hello"}}, headers=headers)
    print(r.json())
    assert r.status_code == 200 and r.json()["output"]

    # the API reference's `async_`
    r = requests.post(
        f"{base}/infer",
        json={"model": f"local/{SERVED}", "input": {"prompt": "hello"}, "async_": True},
        headers=headers,
    )
    assert r.status_code == 202 and r.json()["job_id"]

    # "Listing Models", "Refreshing Registry", "Chat Completion"
    r = requests.get(f"{base}/v1/models", headers=headers)
    assert f"local/{SERVED}" in [m["id"] for m in r.json()["data"]]
    r = requests.post(f"{base}/v1/registry/refresh", headers=headers)
    print(r.json())
    assert r.status_code == 200
    payload = {"model": f"local/{SERVED}", "messages": [{"role": "user", "content": "Hello!"}]}
    r = requests.post(f"{base}/v1/chat/completions", json=payload, headers=headers)
    assert r.json()["choices"][0]["message"]["content"]


def test_llm_inference_system_api(base: str, api_key: str) -> None:
    API_KEY = api_key
    BASE_URL = base

    # "Python (Simple)"
    response = requests.post(
        f"{BASE_URL}/generate",
        headers={"X-API-Key": API_KEY},
        json={"prompt": "Explain machine learning in simple terms", "max_tokens": 256, "temperature": 0.7},
    )
    assert response.status_code == 202
    assert response.json()["status"] == "queued" and response.json()["message"]
    task_id = response.json()["task_id"]
    print(f"Task ID: {task_id}")

    status = requests.get(f"{BASE_URL}/status/{task_id}", headers={"X-API-Key": API_KEY}).json()
    assert status["status"] in ("queued", "processing", "completed") and status["task_id"] == task_id

    deadline = time.monotonic() + 30
    while True:
        result = requests.get(f"{BASE_URL}/result/{task_id}", headers={"X-API-Key": API_KEY}).json()

        if result["status"] == "completed":
            print("\nResult:", result["result"])
            print("\nMetrics:", result["metrics"])
            break
        elif result["status"] == "error":
            print("Error:", result["error_message"])
            break
        else:
            print(f"Status: {result['status']}...")
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert result["status"] == "completed" and result["result"]
    for name in ("queue_wait_time", "processing_time", "total_time", "prompt_tokens", "completion_tokens"):
        assert name in result["metrics"]
    assert result["metrics"]["tokens_per_second"] >= 0

    # "Stream Progress (SSE)" as a browser's EventSource asks for it: the key in the query, no header;
    # `onmessage` sees unnamed events whose data has `status` and `message`, and `result` when completed.
    events = []
    with httpx.stream("GET", f"{BASE_URL}/stream/{task_id}?api_key={API_KEY}", timeout=30) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            assert not line.startswith("event:")
            if line.startswith("data:"):
                events.append(httpx.Response(200, content=line[5:]).json())
    assert events[0]["status"] in ("queued", "processing", "completed") and events[0]["message"]
    assert events[-1]["status"] == "completed" and events[-1]["result"] == result["result"]


# The seed's "Stream Progress (SSE)" example as it is written, with `console.log` kept for the test and
# each connection counted (a browser reconnects an EventSource whose stream ends unless the page closes it).
SEED_EVENTSOURCE = """
window.logs = []; window.opens = 0;
console.log = (...parts) => window.logs.push(parts.map(String).join(" "));
const eventSource = new EventSource('%s');
eventSource.onopen = () => { window.opens += 1; };
eventSource.onmessage = (event) => {
  const data = JSON.parse(event.data);
  console.log(data.status, data.message);

  if (data.status === 'completed') {
    console.log('Result:', data.result);
    eventSource.close();
  }
};
window.eventSource = eventSource;
"""


def test_the_seed_eventsource_example_prints_the_result_once_and_stops(base: str, api_key: str) -> None:
    headers = {"X-API-Key": api_key}

    def task(model: str) -> str:
        body: dict[str, Any] = {"prompt": "Tell me a story", "model": model, "max_tokens": 8}
        task_id = str(requests.post(f"{base}/generate", headers=headers, json=body).json()["task_id"])
        wait_for(
            lambda: (
                requests.get(f"{base}/status/{task_id}", headers=headers).json()["status"] in ("completed", "failed")
            ),
            timeout=60,
            interval=0.2,
            what="the task to end",
        )
        return task_id

    done, failed = task(f"local/{SERVED}"), task("local/dead")
    result = requests.get(f"{base}/result/{done}", headers=headers).json()["result"]
    with chromium() as browser:
        browser.get(f"{base}/healthz")  # a page of the gateway's origin
        browser.execute_script(SEED_EVENTSOURCE % f"{base}/stream/{done}?api_key={api_key}")
        wait_for(lambda: browser.execute_script("return window.eventSource.readyState") == 2, timeout=30)
        assert browser.execute_script("return window.logs") == ["completed Task completed", f"Result: {result}"]
        assert browser.execute_script("return window.opens") == 1
        # A failed task: the seed's code does not close on it; the browser reconnects once, is told the
        # terminal event was seen (204) and stops, without the history replayed.
        browser.execute_script(SEED_EVENTSOURCE % f"{base}/stream/{failed}?api_key={api_key}")
        wait_for(lambda: browser.execute_script("return window.eventSource.readyState") == 2, timeout=30)
        assert browser.execute_script("return window.logs") == ["failed Task failed"]
        assert browser.execute_script("return window.opens") == 1


def test_the_query_key_works_on_the_stream_route_only(stack: Stack, base: str, api_key: str) -> None:
    assert requests.get(f"{base}/stream/job_none?api_key={api_key}").status_code == 404  # known key, no job
    assert requests.get(f"{base}/stream/job_none?api_key=wrong").status_code == 401
    for path in ("/status/job_none", "/result/job_none", "/v1/models"):
        assert requests.get(f"{base}{path}?api_key={api_key}").status_code == 401
    assert api_key not in stack.processes["gateway"].log_path.read_text()  # nor in the access log


def test_a_failed_task_reads_as_the_seed_writes_it(base: str, api_key: str) -> None:
    headers = {"X-API-Key": api_key}
    task_id = requests.post(
        f"{base}/generate", headers=headers, json={"prompt": "x", "model": "local/dead", "max_tokens": 4}
    ).json()["task_id"]

    def failed() -> dict[str, Any] | None:
        result = requests.get(f"{base}/result/{task_id}", headers=headers).json()
        return result if result["status"] == "error" else None

    result = wait_for(failed, timeout=30, interval=0.2, what="the task to fail")
    assert result["error_message"] and result["error_type"]
    assert requests.get(f"{base}/status/{task_id}", headers=headers).json()["status"] == "failed"


def test_inference_gateway(base: str, api_key: str) -> None:
    headers = {"Authorization": f"Bearer {api_key}"}
    # No `model`: the configured default model answers.
    plain = requests.post(
        f"{base}/v1/chat/completions", headers=headers, json={"messages": [{"role": "user", "content": "hello"}]}
    )
    assert plain.status_code == 200, plain.text
    assert plain.json()["object"] == "chat.completion" and plain.json()["choices"][0]["message"]["content"]

    # "Request-ID echoed back": in the header and as the answer's `id`.
    echoed = requests.post(
        f"{base}/v1/chat/completions",
        headers={**headers, "X-Request-ID": "my-trace-id-42"},
        json={"messages": [{"role": "user", "content": "hello"}]},
    )
    assert echoed.headers["x-request-id"] == "my-trace-id-42" and echoed.json()["id"] == "my-trace-id-42"

    # Streaming: every chunk carries the client's id too.
    with requests.post(
        f"{base}/v1/chat/completions",
        headers={**headers, "X-Request-ID": "my-trace-id-43"},
        json={"messages": [{"role": "user", "content": "hello"}], "stream": True},
        stream=True,
    ) as resp:
        lines = [line for line in resp.iter_lines() if line.startswith(b"data: {")]
    assert lines and all(b'"id":"my-trace-id-43"' in line for line in lines)

    assert requests.get(f"{base}/healthz").json() == {"status": "ok"}
