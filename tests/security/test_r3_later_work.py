"""Issue 29, work that runs later on a key's behalf (findings 2 and 15), through the real stack.

Finding 2: batches and queued jobs ran with the principal stored when they were made: a batch went on to
its last line after its key was revoked, blocked, restricted or its budget cut, and a blocked key's queued
jobs all ran. Now every line and job asks for the key's current state (cached, dropped on key events):
revoke and block stop the batch within the lines already in flight, restriction and a budget cut give
each later line the error a request of that key gets, and a blocked key's jobs are cancelled.

Finding 15: a line's `custom_id` named the upstream request (`X-Request-ID`) unchecked: U+202E gave a 502,
NUL and DEL went raw into the upstream request head. Now such a line fails alone, never sent.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from iir_dev.stack import Stack
from tests.conftest import MASTER_KEY, SERVED
from tests.waiting import wait_for

ADMIN = {"Authorization": f"Bearer {MASTER_KEY}"}
SLOW = "local/slow"  # 4 tokens a second: two tokens take half a second
LINES = 80
CONCURRENCY = 4  # the gateway's IIR_BATCH_CONCURRENCY: lines in flight at once
# Lines that may still complete after a change: those in flight when it lands, and as many again for the
# moment between reading the count and the change.
AFTER_BOUND = 2 * CONCURRENCY
FINAL = ("completed", "failed", "expired", "cancelled")


def new_key(stack: Stack, name: str, **settings: Any) -> tuple[str, str]:
    made = httpx.post(f"{stack.gateway_url}/api/v1/apikeys", json={"name": name, **settings}, headers=ADMIN)
    assert made.status_code == 201, made.text
    return made.json()["id"], made.json()["key"]


def start_batch(stack: Stack, key: str, lines: list[dict[str, Any]]) -> str:
    auth = {"Authorization": f"Bearer {key}"}
    content = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    files = {"file": ("in.jsonl", io.BytesIO(content), "application/jsonl")}
    uploaded = httpx.post(f"{stack.gateway_url}/v1/files", data={"purpose": "batch"}, files=files, headers=auth)
    assert uploaded.status_code == 200, uploaded.text
    body = {"input_file_id": uploaded.json()["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    batch = httpx.post(f"{stack.gateway_url}/v1/batches", json=body, headers=auth)
    assert batch.status_code == 200, batch.text
    return str(batch.json()["id"])


def slow_lines(count: int = LINES) -> list[dict[str, Any]]:
    body = {"model": SLOW, "messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
    return [
        {"custom_id": f"l-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body} for i in range(count)
    ]


def batch(stack: Stack, batch_id: str) -> dict[str, Any]:
    got = httpx.get(f"{stack.gateway_url}/v1/batches/{batch_id}", headers=ADMIN)  # an admin reads any batch
    assert got.status_code == 200, got.text
    return dict(got.json())


def ended(stack: Stack, batch_id: str) -> dict[str, Any]:
    return dict(
        wait_for(
            lambda: (b := batch(stack, batch_id))["status"] in FINAL and b,
            timeout=60,
            interval=0.2,
            what=f"batch {batch_id} to end",
        )
    )


def lines_of(stack: Stack, file_id: str | None) -> list[dict[str, Any]]:
    if not file_id:
        return []
    got = httpx.get(f"{stack.gateway_url}/v1/files/{file_id}/content", headers=ADMIN)
    assert got.status_code == 200, got.text
    return [json.loads(line) for line in got.text.splitlines()]


def change_mid_batch(stack: Stack, change: Callable[[str], None], **settings: Any) -> tuple[str, dict[str, Any], int]:
    """Starts a slow batch, applies `change(key_id)` once some lines are done; (key, final batch, lines
    completed when the change was made)."""
    key_id, key = new_key(stack, "later-work", **settings)
    batch_id = start_batch(stack, key, slow_lines())
    before = wait_for(
        lambda: (
            batch(stack, batch_id)["request_counts"]["completed"] >= CONCURRENCY
            and batch(stack, batch_id)["request_counts"]["completed"]
        ),
        timeout=30,
        interval=0.1,
        what="the batch to get going",
    )
    change(key_id)
    done = ended(stack, batch_id)
    assert before < LINES // 2, "the change must land mid-batch"
    return key, done, int(before)


def admin_call(stack: Stack, method: str, path: str, **kw: Any) -> None:
    resp = httpx.request(method, f"{stack.gateway_url}/api/v1/apikeys/{path}", headers=ADMIN, **kw)
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize(
    ("how", "code"),
    [("revoke", "key_revoked"), ("block", "key_blocked")],
)
def test_revoking_or_blocking_a_key_stops_its_batch(stack: Stack, how: str, code: str) -> None:
    def change(key_id: str) -> None:
        admin_call(stack, "POST", f"{key_id}/{how}")

    _, done, before = change_mid_batch(stack, change)
    assert done["status"] == "failed", done
    assert done["errors"]["data"][0]["code"] == code and "not sent" in done["errors"]["data"][0]["message"]
    counts = done["request_counts"]
    assert counts["completed"] - before <= AFTER_BOUND, (before, counts)  # was every line of the batch
    assert counts["completed"] + counts["failed"] < LINES  # the rest never sent
    assert len(lines_of(stack, done["output_file_id"])) == counts["completed"]


def test_restricting_a_key_refuses_its_later_lines_as_a_request_would_be(stack: Stack) -> None:
    def change(key_id: str) -> None:
        admin_call(stack, "PATCH", key_id, json={"allowed_models": [f"local/{SERVED}"]})

    key, done, before = change_mid_batch(stack, change)
    assert done["status"] == "completed", done
    assert done["request_counts"]["completed"] - before <= AFTER_BOUND, (before, done["request_counts"])
    direct = httpx.post(
        f"{stack.gateway_url}/v1/chat/completions",
        json=slow_lines(1)[0]["body"],
        headers={"Authorization": f"Bearer {key}"},
    )
    assert direct.status_code in (403, 404), direct.text
    errors = lines_of(stack, done["error_file_id"])
    assert len(errors) >= LINES - before - AFTER_BOUND
    assert all(e["response"]["status_code"] == direct.status_code for e in errors)
    assert {e["response"]["body"]["error"]["code"] for e in errors} == {direct.json()["error"]["code"]}


def test_cutting_a_budget_refuses_the_later_lines(stack: Stack) -> None:
    def change(key_id: str) -> None:
        admin_call(stack, "PATCH", key_id, json={"max_budget": 0.000001})

    _, done, before = change_mid_batch(stack, change, max_budget=100.0)
    assert done["status"] == "completed", done
    assert done["request_counts"]["completed"] - before <= AFTER_BOUND, (before, done["request_counts"])
    errors = lines_of(stack, done["error_file_id"])
    assert len(errors) >= LINES - before - AFTER_BOUND
    assert {e["response"]["body"]["error"]["code"] for e in errors} == {"insufficient_quota"}


def test_blocking_a_key_cancels_its_queued_jobs(stack: Stack) -> None:
    key_id, key = new_key(stack, "later-jobs")
    body = {"model": SLOW, "messages": [{"role": "user", "content": "x"}], "max_tokens": 8}
    jobs = []
    for _ in range(24):
        made = httpx.post(
            f"{stack.gateway_url}/v1/async/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        )
        assert made.status_code == 202, made.text
        jobs.append(made.json()["job_id"])
    admin_call(stack, "POST", f"{key_id}/block")

    def all_states() -> list[dict[str, Any]]:
        return [httpx.get(f"{stack.gateway_url}/v1/async/chat/completions/{j}", headers=ADMIN).json() for j in jobs]

    # On a busy machine the first jobs may finish while the others are still being submitted: what had
    # finished by the block (at most what has finished now) is not the block's to stop.
    finished_by_block = sum(j["status"] == "completed" for j in all_states())

    def states() -> list[dict[str, Any]] | None:
        got = all_states()
        return got if all(j["status"] in ("completed", "failed", "cancelled") for j in got) else None

    final = wait_for(states, timeout=60, interval=0.3, what="every job to end")
    completed = [j for j in final if j["status"] == "completed"]
    cancelled = [j for j in final if j["status"] == "cancelled"]
    # Only the jobs already running when the key was blocked may still finish (was 24 of 24).
    assert len(completed) <= finished_by_block + CONCURRENCY, [j["status"] for j in final]
    assert len(cancelled) >= len(jobs) - finished_by_block - CONCURRENCY
    assert {j["error"]["code"] for j in cancelled} == {"key_blocked"}


def test_a_custom_id_that_is_no_request_id_fails_its_line_and_is_never_sent(stack: Stack) -> None:
    _, key = new_key(stack, "custom-ids")
    body = {"model": f"local/{SERVED}", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
    bad = ["rtl\u202eevil", "nul\x00x", "del\x7fx", "crlf\r\nx-injected: 1", "x" * 200]
    lines = [
        {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
        for custom_id in ["good-1", *bad]
    ]
    done = ended(stack, start_batch(stack, key, lines))
    assert done["status"] == "completed" and done["request_counts"] == {
        "total": 6,
        "completed": 1,
        "failed": 5,
    }, done
    [ok] = lines_of(stack, done["output_file_id"])
    assert ok["custom_id"] == "good-1" and ok["response"]["status_code"] == 200
    errors = lines_of(stack, done["error_file_id"])
    assert len(errors) == len(bad)
    for line in errors:  # refused before anything was sent: no 502, nothing upstream
        assert line["response"] is None and line["error"]["code"] == "invalid_request"
        assert "custom_id must be" in line["error"]["message"]
