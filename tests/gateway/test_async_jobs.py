"""Async jobs against real Redis, run by the gateway app's job worker: lifecycle, events, cancel, ownership,
the task API (`/generate`, `/status`, `/result`, `/stream`) and `/infer` (moved from
tests/integration/test_async_jobs.py; a gateway process killed mid-job stays there)."""

from __future__ import annotations

import json
from typing import Any

import pytest_asyncio

from tests.conftest import SERVED
from tests.gateway.conftest import Fleet, Gateway
from tests.waiting import eventually

ASYNC = "/v1/async/chat/completions"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def headers(fleet: Fleet) -> dict[str, str]:
    return {"Authorization": f"Bearer {await fleet.create_key('jobs-owner')}"}


async def submit(gateway: Gateway, headers: dict[str, str], model: str = f"local/{SERVED}", **extra: object) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": "Tell me about queues"}], **extra}
    resp = await gateway.client.post(ASYNC, json=body, headers=headers)
    assert resp.status_code == 202 and resp.json()["status"] == "pending", resp.text
    return str(resp.json()["job_id"])


async def wait_status(
    gateway: Gateway, headers: dict[str, str], job_id: str, wanted: set[str], timeout: float = 20
) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        job: dict[str, Any] = (await gateway.client.get(f"{ASYNC}/{job_id}", headers=headers)).json()
        return job if job["status"] in wanted else None

    got: dict[str, Any] = await eventually(reached, timeout)
    return got


async def test_lifecycle_with_events(gateway: Gateway, headers: dict[str, str]) -> None:
    job_id = await submit(gateway, headers, max_tokens=6)
    done = await wait_status(gateway, headers, job_id, {"completed", "failed"})
    assert done["status"] == "completed", done
    completion = done["result"]
    assert completion["object"] == "chat.completion" and completion["choices"][0]["message"]["content"]
    assert completion["usage"]["completion_tokens"] > 0 and done["finished_at"] >= done["started_at"]
    events = (await gateway.client.get(f"{ASYNC}/{job_id}/events", headers=headers)).text
    kinds = [line[7:] for line in events.splitlines() if line.startswith("event: ")]
    assert kinds[0] == "status" and "token" in kinds and kinds[-1] == "status"
    last = json.loads([line for line in events.splitlines() if line.startswith("data: ")][-1][6:])
    assert last["status"] == "completed"


async def test_jobs_belong_to_their_key(gateway: Gateway, fleet: Fleet, headers: dict[str, str]) -> None:
    job_id = await submit(gateway, headers, max_tokens=2)
    other = {"Authorization": f"Bearer {await fleet.create_key('someone-else')}"}
    for method, path in (
        ("GET", f"{ASYNC}/{job_id}"),
        ("GET", f"{ASYNC}/{job_id}/events"),
        ("DELETE", f"{ASYNC}/{job_id}"),
        ("GET", f"/result/{job_id}"),
    ):
        resp = await gateway.client.request(method, path, headers=other)
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "job_not_found", path
    assert (await gateway.client.get(f"{ASYNC}/{job_id}")).status_code == 401


async def test_cancel_a_running_job(gateway: Gateway, headers: dict[str, str]) -> None:
    job_id = await submit(gateway, headers, model="local/slow", max_tokens=40)
    await wait_status(gateway, headers, job_id, {"running"})
    cancelled = await gateway.client.delete(f"{ASYNC}/{job_id}", headers=headers)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    # The tier's one job worker runs the next job only once it let go of the cancelled one.
    done = await submit(gateway, headers, max_tokens=2)
    await wait_status(gateway, headers, done, {"completed"})
    assert (await gateway.client.get(f"{ASYNC}/{job_id}", headers=headers)).json()["status"] == "cancelled"
    refused = await gateway.client.delete(f"{ASYNC}/{done}", headers=headers)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "job_not_cancellable"


async def test_task_api(gateway: Gateway, headers: dict[str, str]) -> None:
    client = gateway.client
    created = await client.post(
        "/generate",
        headers=headers,
        json={"prompt": "Say hi", "max_tokens": 5, "temperature": 0.2, "top_p": 0.9, "user_id": "u1"},
    )
    assert created.status_code == 202
    task = created.json()["task_id"]
    assert created.json()["id"] == task and created.json()["status"] == "queued"
    assert (await client.get(f"/status/{task}", headers=headers)).json()["status"] in (
        "queued",
        "processing",
        "completed",
    )
    await wait_status(gateway, headers, task, {"completed"})
    result = (await client.get(f"/result/{task}", headers=headers)).json()
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
    # A finished task's stream: its terminal event alone, with the result, and no history after it; a
    # browser reconnecting after it (Last-Event-ID) gets 204, which stops EventSource reconnecting.
    streamed = (await client.get(f"/stream/{task}", headers=headers)).text
    assert "event:" not in streamed and streamed.startswith("id: final\n") and streamed.count("data:") == 1
    final = json.loads(streamed.split("data:", 1)[1])
    assert final["status"] == "completed" and final["result"] == result["result"]
    again = await client.get(f"/stream/{task}", headers={**headers, "Last-Event-ID": "final"})
    assert again.status_code == 204 and not again.content
    bad = await client.post("/generate", headers=headers, json={"max_tokens": 5})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "prompt"


async def test_infer_sync_and_async(gateway: Gateway, headers: dict[str, str]) -> None:
    sync = await gateway.client.post(
        "/infer", headers=headers, json={"model": f"local/{SERVED}", "input": "hello", "max_tokens": 4}
    )
    assert sync.status_code == 200 and sync.json()["output"] and sync.json()["model"] == f"local/{SERVED}"
    queued = await gateway.client.post(
        "/infer",
        headers=headers,
        json={"model": f"local/{SERVED}", "input": [{"role": "user", "content": "hi"}], "async": True},
    )
    assert queued.status_code == 202
    assert (await wait_status(gateway, headers, queued.json()["job_id"], {"completed"}))["result"]


async def test_bad_submissions_are_refused_at_once(gateway: Gateway, headers: dict[str, str]) -> None:
    client = gateway.client
    unknown = await client.post(
        ASYNC, headers=headers, json={"model": "nope/x", "messages": [{"role": "user", "content": "x"}]}
    )
    assert unknown.status_code == 404
    invalid = await client.post(ASYNC, headers=headers, json={"model": f"local/{SERVED}"})
    assert invalid.status_code == 400 and invalid.json()["error"]["param"] == "messages"
    assert (await client.get(f"{ASYNC}/job_missing", headers=headers)).status_code == 404
