"""Jobs under the same limits as requests, refused once their key is revoked, cancellable by an admin,
restarted visibly, and billed for what a cut stream generated."""

from __future__ import annotations

import os
import signal
from typing import Any

import httpx

from tests.concurrency.conftest import Pair, bearer
from tests.conftest import MASTER_KEY
from tests.json_values import json_object
from tests.waiting import wait_for

# 31 tokens at 20 tokens a second: a job of about 1.5 s.
LONG = {"model": "local/slow", "messages": [{"role": "user", "content": "a long story"}], "max_tokens": 31}
JOBS = "/v1/async/chat/completions"


def submit(url: str, key: str, body: dict[str, Any] = LONG) -> httpx.Response:
    return httpx.post(f"{url}{JOBS}", json=body, headers=bearer(key))


def job(url: str, key: str, job_id: str) -> dict[str, Any]:
    return json_object(httpx.get(f"{url}{JOBS}/{job_id}", headers=bearer(key)).json())


def final(url: str, key: str, job_id: str, timeout: float = 30) -> dict[str, Any]:
    return wait_for(
        lambda: (j := job(url, key, job_id))["status"] in ("completed", "failed", "cancelled") and j, timeout
    ) or job(url, key, job_id)


def test_submission_counts_against_rpm_and_is_bounded(pair: Pair) -> None:
    limited = pair.key(rpm_limit=2)["key"]
    codes = [submit(pair.a, limited).status_code for _ in range(3)]
    assert codes == [202, 202, 429]
    big = {**LONG, "messages": [{"role": "user", "content": "x" * 300_000}]}
    too_big = submit(pair.a, pair.key()["key"], big)
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "request_too_large"


def test_a_revoked_keys_queued_jobs_are_refused_and_admins_cancel_any(pair: Pair) -> None:
    blocker = pair.key()["key"]
    busy = [submit(pair.a, blocker).json()["job_id"] for _ in range(4)]  # the 4 workers are taken ~1.5 s
    victim = pair.key()
    queued = [submit(pair.a, victim["key"]) for _ in range(6)]
    assert [q.status_code for q in queued] == [202] * 5 + [429]  # at most 5 unfinished jobs per key
    assert queued[5].json()["error"]["code"] == "too_many_jobs"
    assert pair.admin("DELETE", f"/api/v1/apikeys/{victim['id']}").status_code == 200
    other = pair.key()["key"]
    pending = submit(pair.a, other).json()["job_id"]
    cancelled = httpx.delete(f"{pair.a}{JOBS}/{pending}", headers=bearer(MASTER_KEY))
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    for job_id in (q.json()["job_id"] for q in queued[:5]):
        done = final(pair.a, MASTER_KEY, job_id)
        assert done["status"] == "cancelled" and done["error"]["code"] == "key_revoked", done
    assert all(final(pair.a, blocker, j)["status"] == "completed" for j in busy)
    assert job(pair.a, other, pending)["status"] == "cancelled"
    # Their slots were freed: the other key may queue again.
    assert submit(pair.a, other).status_code == 202


def test_a_cut_stream_is_billed_for_what_was_generated(pair: Pair) -> None:
    made = pair.key()
    with httpx.stream(
        "POST", f"{pair.b}/v1/chat/completions", headers=bearer(made["key"]), json={**LONG, "stream": True}
    ) as resp:
        seen = 0
        for line in resp.iter_lines():
            if '"content":"' in line and '"content":""' not in line:
                seen += 1
            if seen == 10:
                break

    def billed() -> int:
        usage = pair.admin("GET", f"/api/v1/apikeys/{made['id']}/usage").json()
        return int(usage["totals"]["completion_tokens"])

    assert wait_for(lambda: billed() >= 10, 10), billed()
    assert billed() < 31  # the stream stopped: vLLM (here the simulator) was told to stop


def test_a_rerun_job_says_a_new_attempt_starts(pair: Pair) -> None:
    key = pair.key()["key"]
    job_id = submit(pair.a, key).json()["job_id"]
    assert wait_for(lambda: job(pair.a, key, job_id)["status"] == "running", 10)
    worker = pair.stack.processes["gateway-b"].popen
    os.kill(worker.pid, signal.SIGKILL)  # the gateway running the job dies mid-way
    worker.wait(10)
    pair.b = pair.stack.start_gateway_replica("gateway-b2", env={"IIR_JOB_WORKERS": "4"})
    done = final(pair.a, key, job_id, timeout=40)
    assert done["status"] == "completed" and done["result"]["choices"][0]["message"]["content"]
    with httpx.stream("GET", f"{pair.a}{JOBS}/{job_id}/events", headers=bearer(key), timeout=20) as resp:
        kinds = [line[7:] for line in resp.iter_lines() if line.startswith("event: ")]
    assert kinds.count("restart") == 1
    # The new attempt's tokens follow the restart event; what came before it is to be dropped.
    assert kinds.index("restart") < len(kinds) - 1 - kinds[::-1].index("token")
