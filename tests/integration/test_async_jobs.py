"""Async jobs against real Redis and a real gateway: lifecycle, events, cancel, ownership, restart mid-job,
and the task API (`/generate`, `/status`, `/result`, `/stream`) and `/infer`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from iir_dev.stack import Stack, http_ok
from tests.conftest import SERVED, make_stack
from tests.waiting import wait_for

ASYNC = "/v1/async/chat/completions"


@pytest.fixture(scope="module")
def jobs(
    tmp_path_factory: pytest.TempPathFactory, database_url: str, redis_url: str, slow_sim: str
) -> Iterator[tuple[Stack, dict[str, str]]]:
    stack = make_stack(
        Path(tmp_path_factory.mktemp("jobs")),
        database_url,
        redis_url,
        slow_sim,
        IIR_JOB_CLAIM_IDLE_S="1.5",
        IIR_JOB_WORKERS="2",
        IIR_UPSTREAM_READ_TIMEOUT_S="10",
    )
    key = stack.create_key("jobs-owner")
    yield stack, {"Authorization": f"Bearer {key}"}
    stack.stop()


def submit(stack: Stack, headers: dict[str, str], model: str = f"local/{SERVED}", **extra: object) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": "Tell me about queues"}], **extra}
    resp = httpx.post(f"{stack.gateway_url}{ASYNC}", json=body, headers=headers)
    assert resp.status_code == 202 and resp.json()["status"] == "pending", resp.text
    return str(resp.json()["job_id"])


def wait_status(
    stack: Stack, headers: dict[str, str], job_id: str, wanted: set[str], timeout: float = 20
) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        job = httpx.get(f"{stack.gateway_url}{ASYNC}/{job_id}", headers=headers).json()
        return job if job["status"] in wanted else None

    return wait_for(reached, timeout, what=f"job {job_id} to reach {wanted}")


def test_lifecycle_with_events(jobs: tuple[Stack, dict[str, str]]) -> None:
    stack, headers = jobs
    job_id = submit(stack, headers, max_tokens=6)
    done = wait_status(stack, headers, job_id, {"completed", "failed"})
    assert done["status"] == "completed", done
    completion = done["result"]
    assert completion["object"] == "chat.completion" and completion["choices"][0]["message"]["content"]
    assert completion["usage"]["completion_tokens"] > 0 and done["finished_at"] >= done["started_at"]
    events = httpx.get(f"{stack.gateway_url}{ASYNC}/{job_id}/events", headers=headers).text
    kinds = [line[7:] for line in events.splitlines() if line.startswith("event: ")]
    assert kinds[0] == "status" and "token" in kinds and kinds[-1] == "status"
    last = json.loads([line for line in events.splitlines() if line.startswith("data: ")][-1][6:])
    assert last["status"] == "completed"


def test_jobs_belong_to_their_key(jobs: tuple[Stack, dict[str, str]]) -> None:
    stack, headers = jobs
    job_id = submit(stack, headers, max_tokens=2)
    other = {"Authorization": f"Bearer {stack.create_key('someone-else')}"}
    for method, path in (
        ("GET", f"{ASYNC}/{job_id}"),
        ("GET", f"{ASYNC}/{job_id}/events"),
        ("DELETE", f"{ASYNC}/{job_id}"),
        ("GET", f"/result/{job_id}"),
    ):
        resp = httpx.request(method, f"{stack.gateway_url}{path}", headers=other)
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "job_not_found", path
    assert httpx.get(f"{stack.gateway_url}{ASYNC}/{job_id}").status_code == 401


def test_cancel_a_running_job(jobs: tuple[Stack, dict[str, str]]) -> None:
    stack, headers = jobs
    job_id = submit(stack, headers, model="local/slow", max_tokens=40)
    wait_status(stack, headers, job_id, {"running"})
    cancelled = httpx.delete(f"{stack.gateway_url}{ASYNC}/{job_id}", headers=headers)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    time.sleep(1.0)
    assert httpx.get(f"{stack.gateway_url}{ASYNC}/{job_id}", headers=headers).json()["status"] == "cancelled"
    done = submit(stack, headers, max_tokens=2)
    wait_status(stack, headers, done, {"completed"})
    refused = httpx.delete(f"{stack.gateway_url}{ASYNC}/{done}", headers=headers)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "job_not_cancellable"


def test_a_job_survives_a_gateway_killed_mid_job(jobs: tuple[Stack, dict[str, str]]) -> None:
    stack, headers = jobs
    job_id = submit(stack, headers, model="local/slow", max_tokens=8)
    wait_status(stack, headers, job_id, {"running"})
    stack.processes["gateway"].popen.kill()  # no ack: the entry stays pending in Redis
    stack.processes["gateway"].popen.wait(10)
    stack._spawn("gateway", "iir_gateway")
    stack._wait("gateway", lambda: http_ok(f"{stack.gateway_url}/health"), 30)
    done = wait_status(stack, headers, job_id, {"completed", "failed"}, timeout=30)
    assert done["status"] == "completed" and done["result"]["choices"][0]["finish_reason"]
    status = httpx.get(f"{stack.gateway_url}/status/{job_id}", headers=headers).json()
    assert status["attempts"] == 2  # run again by the new process once the old claim went stale


def test_task_api(jobs: tuple[Stack, dict[str, str]]) -> None:
    stack, headers = jobs
    created = httpx.post(
        f"{stack.gateway_url}/generate",
        headers=headers,
        json={"prompt": "Say hi", "max_tokens": 5, "temperature": 0.2, "top_p": 0.9, "user_id": "u1"},
    )
    assert created.status_code == 202
    task = created.json()["task_id"]
    assert created.json()["id"] == task and created.json()["status"] == "queued"
    assert httpx.get(f"{stack.gateway_url}/status/{task}", headers=headers).json()["status"] in (
        "queued",
        "processing",
        "completed",
    )
    wait_status(stack, headers, task, {"completed"})
    result = httpx.get(f"{stack.gateway_url}/result/{task}", headers=headers).json()
    assert result["status"] == "completed" and result["result"] and result["text"] == result["result"]
    assert {
        "queue_wait_time",
        "processing_time",
        "total_time",
        "prompt_tokens",
        "completion_tokens",
        "tokens_per_second",
        "queue_wait_s",  # IIR's first names stay
        "tokens_per_s",
    } <= set(result["metrics"])
    assert result["metrics"]["completion_tokens"] > 0
    streamed = httpx.get(f"{stack.gateway_url}/stream/{task}", headers=headers).text
    assert "event:" not in streamed and '"token"' in streamed and '"completed"' in streamed
    bad = httpx.post(f"{stack.gateway_url}/generate", headers=headers, json={"max_tokens": 5})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "prompt"


def test_infer_sync_and_async(jobs: tuple[Stack, dict[str, str]]) -> None:
    stack, headers = jobs
    sync = httpx.post(
        f"{stack.gateway_url}/infer",
        headers=headers,
        json={"model": f"local/{SERVED}", "input": "hello", "max_tokens": 4},
    )
    assert sync.status_code == 200 and sync.json()["output"] and sync.json()["model"] == f"local/{SERVED}"
    queued = httpx.post(
        f"{stack.gateway_url}/infer",
        headers=headers,
        json={"model": f"local/{SERVED}", "input": [{"role": "user", "content": "hi"}], "async": True},
    )
    assert queued.status_code == 202
    assert wait_status(stack, headers, queued.json()["job_id"], {"completed"})["result"]


def test_bad_submissions_are_refused_at_once(jobs: tuple[Stack, dict[str, str]]) -> None:
    stack, headers = jobs
    unknown = httpx.post(
        f"{stack.gateway_url}{ASYNC}",
        headers=headers,
        json={"model": "nope/x", "messages": [{"role": "user", "content": "x"}]},
    )
    assert unknown.status_code == 404
    invalid = httpx.post(f"{stack.gateway_url}{ASYNC}", headers=headers, json={"model": f"local/{SERVED}"})
    assert invalid.status_code == 400 and invalid.json()["error"]["param"] == "messages"
    assert httpx.get(f"{stack.gateway_url}{ASYNC}/job_missing", headers=headers).status_code == 404
