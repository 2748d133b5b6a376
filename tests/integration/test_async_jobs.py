"""An async job survives its gateway process killed mid-job: another process runs it again once the claim
went stale (the rest of the jobs API is tested through the gateway app in tests/gateway/test_async_jobs.py)."""

from __future__ import annotations

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
