"""A throwaway Redis the test kills and brings back empty, and a killed auth service: sync requests keep
being served, job submission says 503, a gateway starts without Redis, and no job is lost or doubled."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from iir_dev import datastores
from iir_dev.stack import Stack, grpc_serving
from tests.concurrency.conftest import bearer
from tests.conftest import SERVED, make_stack, start_sim
from tests.waiting import unavailable, wait_for

CHAT = {"model": f"local/{SERVED}", "messages": [{"role": "user", "content": "hi"}]}
JOBS = "/v1/async/chat/completions"
JOB_WORKERS = 4
BACKING_OFF = "job worker error; backing off"  # a job worker's line, once per outage


class ThrowawayRedis:
    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server is not installed")
        self.binary, self.workdir, self.port = binary, workdir, datastores.free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:  # always empty: nothing is saved
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        assert wait_for(lambda: _pings(redis.Redis(port=self.port)), 10)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)


def _pings(client: object) -> bool:
    try:
        return bool(client.ping())  # type: ignore[attr-defined]
    except Exception:
        return False


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[tuple[Stack, ThrowawayRedis]]:
    work = Path(tmp_path_factory.mktemp("faults"))
    store = ThrowawayRedis(work)
    store.start()
    port = datastores.free_port()
    sim = start_sim(port, models=f"{SERVED},slow", tokens_per_s="40")
    (work / "stack").mkdir()
    stack = make_stack(
        work / "stack",
        database_url,
        store.url,
        f"http://127.0.0.1:{port}",
        IIR_JOB_WORKERS=str(JOB_WORKERS),
        IIR_JOB_CLAIM_IDLE_S="2",
    )
    yield stack, store
    stack.stop()
    sim.terminate()
    sim.wait(10)
    if store.proc and store.proc.poll() is None:
        store.kill()


def backing_off(stack: Stack) -> int:
    """How many times the gateway's job workers have met an outage."""
    return stack.processes["gateway"].log_path.read_text().count(BACKING_OFF)


def test_redis_lost_and_back_empty(faulty: tuple[Stack, ThrowawayRedis]) -> None:
    stack, store = faulty
    url = stack.gateway_url
    key = stack.create_key("faults")
    assert httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers=bearer(key)).status_code == 200

    before = backing_off(stack)
    store.kill()
    assert httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers=bearer(key)).status_code == 200
    # A Response is made and sent though it cannot be stored; reading stored state is a 503.
    made = httpx.post(f"{url}/v1/responses", json={"model": CHAT["model"], "input": "x"}, headers=bearer(key))
    assert made.status_code == 200 and made.json()["output"], made.text
    assert httpx.get(f"{url}/v1/responses/{made.json()['id']}", headers=bearer(key)).status_code == 503
    refused = httpx.post(f"{url}{JOBS}", json=CHAT, headers=bearer(key))
    assert refused.status_code == 503 and refused.headers["retry-after"]
    assert refused.json()["error"]["code"] == "store_unavailable"
    # A gateway starts while Redis is down, and serves.
    late = stack.start_gateway_replica("gateway-late")
    assert httpx.post(f"{late}/v1/chat/completions", json=CHAT, headers=bearer(key)).status_code == 200
    wait_for(lambda: backing_off(stack) >= before + JOB_WORKERS, timeout=20, what="every job worker backing off")
    time.sleep(1.5)  # the outage outlasts the workers' next retries (after 0.5 s, then 1 s), which log nothing

    store.start()  # back, and empty: no streams, no consumer groups
    ids = [
        wait_for(
            lambda: (
                (r := httpx.post(f"{url}{JOBS}", json=CHAT, headers=bearer(key))).status_code == 202
                and r.json()["job_id"]
            ),
            10,
        )
        for _ in range(10)
    ]
    assert all(ids)

    def finished() -> list[dict[str, Any]]:
        jobs = [httpx.get(f"{url}{JOBS}/{j}", headers=bearer(key)).json() for j in ids]
        return jobs if all(j["status"] == "completed" for j in jobs) else []

    jobs = wait_for(finished, 30)
    assert jobs, [httpx.get(f"{url}{JOBS}/{j}", headers=bearer(key)).json()["status"] for j in ids]
    assert backing_off(stack) <= JOB_WORKERS * 3  # once per outage per worker, not once per retry


def test_jobs_wait_out_a_dead_auth_service(faulty: tuple[Stack, ThrowawayRedis]) -> None:
    stack, _ = faulty
    url = stack.gateway_url
    key = stack.create_key("auth-outage")

    def cached() -> bool:  # once the gateway follows revocations again, it caches the key
        httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers=bearer(key))
        return bool(httpx.get(f"{url}/health/ready").json()["cached_keys"] > 0)

    assert wait_for(cached, 10)
    auth = stack.processes["auth"].popen
    before = backing_off(stack)
    auth.terminate()
    auth.wait(10)
    submitted = [httpx.post(f"{url}{JOBS}", json=CHAT, headers=bearer(key)) for _ in range(5)]
    assert all(s.status_code == 202 for s in submitted), submitted[0].text
    ids = [s.json()["job_id"] for s in submitted]
    # A worker has taken a job and found the auth service gone: the job waits, none fails.
    wait_for(lambda: backing_off(stack) > before, timeout=20, what="a job worker backing off")
    states = [httpx.get(f"{url}{JOBS}/{j}", headers=bearer(key)).json() for j in ids]
    assert all(s.get("status") == "pending" for s in states), [(s.get("status"), s.get("error")) for s in states]
    stack._spawn("auth", "iir_auth")
    assert wait_for(lambda: grpc_serving(stack.ports.auth, "iir.v1.AuthService"), 20)
    done = wait_for(
        lambda: all(
            httpx.get(f"{url}{JOBS}/{j}", headers=bearer(key)).json().get("status") == "completed" for j in ids
        ),
        40,
    )
    assert done
    results = [httpx.get(f"{url}{JOBS}/{j}", headers=bearer(key)).json() for j in ids]
    assert all(r["result"]["choices"][0]["message"]["content"] for r in results)
