"""Issue 29, storage: what a key can keep in Redis is bounded (files, stored responses, batches, jobs, per
key, team and in all), uploads are streamed and counted as they arrive, /health sees a Redis that refuses
writes, and junk in a batch's fields is a 400."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import OutOfMemoryError

from iir_dev import datastores
from iir_dev.stack import Stack
from iir_gateway.accounting.storage_quota import Limits, StorageQuota
from tests.conftest import MASTER_KEY, SERVED, make_stack
from tests.waiting import unavailable, wait_for

MB = 1024 * 1024


@pytest.fixture(scope="module")
def quota_stack(
    tmp_path_factory: pytest.TempPathFactory, database_url: str, redis_url: str, slow_sim: str
) -> Iterator[Stack]:
    """Small quotas; no batch runner and no job worker, so batches and jobs stay unfinished."""
    stack = make_stack(
        tmp_path_factory.mktemp("r3-storage"),
        database_url,
        redis_url,
        slow_sim,
        IIR_GATEWAY_WORKERS="1",
        IIR_QUOTA_FILES_PER_KEY="3",
        IIR_QUOTA_FILE_BYTES_PER_KEY=str(24 * MB),
        IIR_QUOTA_RESPONSES_PER_KEY="2",
        IIR_QUOTA_BATCHES_PER_KEY="1",
        IIR_QUOTA_JOBS_PER_KEY="2",
        IIR_BATCH_CONCURRENCY="0",
        IIR_JOB_WORKERS="0",
    )
    yield stack
    stack.stop()


def _key(stack: Stack, **limits: object) -> str:
    body = {"name": f"r3-storage-{uuid.uuid4().hex[:6]}", **limits}
    made = httpx.post(f"{stack.gateway_url}/api/v1/apikeys", json=body, headers=_auth(MASTER_KEY), timeout=10)
    assert made.status_code == 201, made.text
    return str(made.json()["key"])


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _upload(stack: Stack, key: str, content: bytes, timeout: float = 60) -> httpx.Response:
    return httpx.post(
        f"{stack.gateway_url}/v1/files",
        files={"file": ("in.jsonl", content)},
        data={"purpose": "batch"},
        headers=_auth(key),
        timeout=timeout,
    )


def _line(i: int, pad: int = 0) -> bytes:
    body = f'{{"model":"local/{SERVED}","messages":[{{"role":"user","content":"{"x" * pad}"}}]}}'
    return f'{{"custom_id":"r{i}","method":"POST","url":"/v1/chat/completions","body":{body}}}\n'.encode()


# Finding 1 (storage): files, stored responses, batches and jobs are bounded per key; uploads count as requests.


def test_a_key_cannot_fill_redis_with_files(quota_stack: Stack) -> None:
    key = _key(quota_stack)
    ids = []
    for _ in range(3):
        got = _upload(quota_stack, key, _line(0))
        assert got.status_code == 200, got.text
        ids.append(got.json()["id"])
    refused = _upload(quota_stack, key, _line(0))
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "insufficient_quota"
    # Deleting gives the room back.
    assert httpx.delete(f"{quota_stack.gateway_url}/v1/files/{ids[0]}", headers=_auth(key)).status_code == 200
    assert _upload(quota_stack, key, _line(0)).status_code == 200
    # Bytes: a fresh key with 24 MiB may not keep two files of 15 MB.
    big = b"".join(_line(i, pad=300) for i in range(15 * MB // 400))
    other = _key(quota_stack)
    first = _upload(quota_stack, other, big)
    assert first.status_code == 200, first.text
    second = _upload(quota_stack, other, big)
    assert second.status_code == 429 and second.json()["error"]["code"] == "insufficient_quota"
    httpx.delete(f"{quota_stack.gateway_url}/v1/files/{first.json()['id']}", headers=_auth(other))


def test_an_upload_is_a_request_against_the_keys_rpm(quota_stack: Stack) -> None:
    key = _key(quota_stack, rpm_limit=2)
    codes = [_upload(quota_stack, key, _line(0)).status_code for _ in range(3)]
    assert codes == [200, 200, 429]


def test_stored_responses_batches_and_jobs_are_bounded(quota_stack: Stack) -> None:
    key, url = _key(quota_stack), quota_stack.gateway_url
    ask = {"model": f"local/{SERVED}", "input": "hi", "max_output_tokens": 5}
    stored = [httpx.post(f"{url}/v1/responses", json=ask, headers=_auth(key), timeout=20) for _ in range(2)]
    assert [r.status_code for r in stored] == [200, 200]
    full = httpx.post(f"{url}/v1/responses", json=ask, headers=_auth(key), timeout=20)
    assert full.status_code == 429 and full.json()["error"]["code"] == "insufficient_quota"
    unstored = httpx.post(f"{url}/v1/responses", json={**ask, "store": False}, headers=_auth(key), timeout=20)
    assert unstored.status_code == 200
    assert httpx.delete(f"{url}/v1/responses/{stored[0].json()['id']}", headers=_auth(key)).status_code == 200
    assert httpx.post(f"{url}/v1/responses", json=ask, headers=_auth(key), timeout=20).status_code == 200

    file_id = _upload(quota_stack, key, _line(0)).json()["id"]
    batch = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    assert httpx.post(f"{url}/v1/batches", json=batch, headers=_auth(key)).status_code == 200
    second = httpx.post(f"{url}/v1/batches", json=batch, headers=_auth(key))
    assert second.status_code == 429 and second.json()["error"]["code"] == "insufficient_quota"

    job = {"model": f"local/{SERVED}", "messages": [{"role": "user", "content": "hi"}]}
    codes = [httpx.post(f"{url}/v1/async/chat/completions", json=job, headers=_auth(key)).status_code for _ in range(3)]
    assert codes == [202, 202, 429]


def test_quotas_hold_exactly_under_concurrency_with_team_and_global_budgets(redis_url: str) -> None:
    """The one Lua call decides: 40 concurrent reservations on two clients (two gateways) against a key
    that may keep 5, a team 8, and a global budget of 10 × 100 bytes."""

    async def run() -> None:
        prefix = f"iir-test-quota-{uuid.uuid4().hex[:8]}:"
        clients = [aioredis.from_url(redis_url), aioredis.from_url(redis_url)]
        quotas = [StorageQuota(c, prefix, {"files": Limits(5, 0)}, 1.6, 1000) for c in clients]

        async def take(i: int, scopes: list[str]) -> bool:
            try:
                await quotas[i % 2].reserve("files", scopes, f"f{i}-{scopes[0]}", 100, 60)
            except Exception:
                return False
            return True

        a = ["key:a", "team:t", "global"]
        b = ["key:b", "team:t", "global"]
        c = ["key:c", "global"]
        got_a = await asyncio.gather(*(take(i, a) for i in range(20)))
        got_b = await asyncio.gather(*(take(i, b) for i in range(20)))
        assert sum(got_a) == 5 and sum(got_b) == 3  # the key's 5, then the team's 8 in all
        assert sum(await asyncio.gather(*(take(i, c) for i in range(20)))) == 2  # the global 1000 bytes
        held = await quotas[0].members("files", "key:a")
        await quotas[0].release("files", a, held[0])
        assert (await quotas[0].usage("files", a))[0] == (4, 400)
        # Items without bytes (batches) are counted, released and counted again.
        one = StorageQuota(clients[0], prefix, {"batches": Limits(1, 0)}, 0, 1000)
        await one.reserve("batches", ["key:d", "global"], "b1", 0, 60)
        await one.release("batches", ["key:d", "global"], "b1")
        await one.reserve("batches", ["key:d", "global"], "b2", 0, 60)
        assert await one.members("batches", "key:d") == ["b2"]
        for client in clients:
            await client.aclose()

    asyncio.run(run())


# Finding 1 (health): a Redis that refuses writes is not "ok".


def test_health_reports_a_redis_that_refuses_writes(tmp_path: Path) -> None:
    binary = shutil.which("redis-server")
    if not binary:
        unavailable("redis-server not on PATH")
    port = datastores.free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--maxmemory", "2mb"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: datastores.port_open("127.0.0.1", port), timeout=10, what="redis-server")

        async def run() -> dict[str, Any]:
            from iir_gateway.runtime import Runtime
            from iir_gateway.settings import GatewaySettings

            url = f"redis://127.0.0.1:{port}/0"
            filler = aioredis.from_url(url)
            with pytest.raises(OutOfMemoryError):  # filled as one tenant's files filled it
                for i in range(1000):
                    await filler.set(f"fill:{i}", b"x" * 65536)
            assert await filler.ping()  # PING still answers: the old check said "ok"
            gw = Runtime(GatewaySettings(redis_url=url, grpc_timeout_s=0.2))
            try:
                _, report = await gw.health()
            finally:
                await filler.aclose()
                await gw.redis.aclose()
            return report

        report = asyncio.run(run())
        assert report["dependencies"]["redis"]["status"].startswith("refusing writes"), report
        assert report["status"] != "ok"
    finally:
        proc.terminate()
        proc.wait(10)


# Finding 3: an upload is streamed and counted as it arrives: memory stays bounded, the loop answers.


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_big_uploads_cost_little_memory_and_never_stall_the_gateway(quota_stack: Stack) -> None:
    pid = quota_stack.processes["gateway"].popen.pid
    key = _key(quota_stack)
    assert _upload(quota_stack, key, _line(0)).status_code == 200  # warm the route
    before = _peak_rss_kib(pid)
    live: list[int] = []
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                live.append(client.get(f"{quota_stack.gateway_url}/health/live").status_code)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        lines = _upload(quota_stack, key, b"ab\n" * (20 * MB // 3))  # 7 million lines
        assert lines.status_code == 400 and "requests" in lines.json()["error"]["message"]
        blank = _upload(quota_stack, key, b"\n" * (20 * MB - 1000) + _line(0))  # the runner would split it all
        assert blank.status_code == 400 and "line breaks" in blank.json()["error"]["message"]
        whole = b"".join(_line(i, pad=300) for i in range(45_000))  # 20.5 MB in 45,000 lines: kept
        kept = _upload(quota_stack, key, whole)
        assert kept.status_code == 200, kept.text
        assert kept.json()["bytes"] == len(whole)
    finally:
        stop.set()
        poller.join()
    grown_mib = (_peak_rss_kib(pid) - before) / 1024
    # The old code peaked 400+ MiB above its baseline on the first of these; now about 21 MiB.
    assert grown_mib < 32, f"peak RSS grew {grown_mib:.0f} MiB"
    assert live and all(code == 200 for code in live)
    content = httpx.get(f"{quota_stack.gateway_url}/v1/files/{kept.json()['id']}/content", headers=_auth(key))
    assert content.content == whole  # written in pieces, read back whole
    httpx.delete(f"{quota_stack.gateway_url}/v1/files/{kept.json()['id']}", headers=_auth(key))


# Finding 10 (batch part): junk types in create_batch are a 400, never a 500.


@pytest.mark.parametrize(
    "junk",
    [
        {"endpoint": ["/v1/chat/completions"]},
        {"completion_window": ["24h"]},
        {"endpoint": {"a": 1}},
        {"input_file_id": {"id": "file-x"}},
        {"input_file_id": 12},
        {"metadata": {"k": {"nested": True}}},
        {"metadata": {f"k{i}": "v" for i in range(17)}},
        {"metadata": ["x"]},
    ],
)
def test_create_batch_with_junk_fields_is_a_400(quota_stack: Stack, junk: dict[str, Any]) -> None:
    key = _key(quota_stack)
    batch = {"input_file_id": "file-none", "endpoint": "/v1/chat/completions", "completion_window": "24h", **junk}
    got = httpx.post(f"{quota_stack.gateway_url}/v1/batches", json=batch, headers=_auth(key))
    assert got.status_code == 400, got.text
    assert got.json()["error"]["type"] == "invalid_request_error"


# Round three's attacks on the fixes above.


def test_a_single_huge_line_is_refused_before_it_is_held_or_parsed(quota_stack: Stack) -> None:
    """19 MB in one line of 6.6 million `{}`: the old code held and copied the unfinished line, then parsed
    and walked it (+500 MB peak RSS, the loop stalled). A line is a request body: over IIR_MAX_BODY_BYTES
    (64 KiB in this stack) it is a 400 naming the line, as soon as the unfinished line passes it."""
    pid = quota_stack.processes["gateway"].popen.pid
    key = _key(quota_stack)
    assert _upload(quota_stack, key, _line(0)).status_code == 200  # warm the route
    head = b'{"custom_id":"x","method":"POST","url":"/v1/chat/completions","body":{"\xc3\xa9":['
    n = 19 * MB // 3
    before = _peak_rss_kib(pid)
    got = _upload(quota_stack, key, head + b"{}," * n + b"{}]}}\n")
    grown_mib = (_peak_rss_kib(pid) - before) / 1024
    assert got.status_code == 400, got.text
    error = got.json()["error"]
    assert error["type"] == "invalid_request_error" and "Line 1 " in error["message"], error
    assert grown_mib < 32, f"peak RSS grew {grown_mib:.0f} MiB"
    # The second line is the long one; "\r" ends a line too; a line at the cap is kept.
    long_second = _upload(quota_stack, key, _line(0) + _line(1, pad=70_000))
    assert long_second.status_code == 400 and "Line 2 " in long_second.json()["error"]["message"]
    assert _upload(quota_stack, key, _line(0, pad=65_538 - len(_line(0)))).status_code == 400  # one byte over
    cr_lines = _upload(quota_stack, key, (_line(0).rstrip() + b"\r") * 2000)  # 2,000 short lines, no "\n"
    assert cr_lines.status_code == 200, cr_lines.text
    at_cap = _line(0, pad=65_537 - len(_line(0)))
    assert len(at_cap) == 65_537 and _upload(quota_stack, key, at_cap).status_code == 200  # 65,536 + "\n"
    for file in httpx.get(f"{quota_stack.gateway_url}/v1/files", headers=_auth(key)).json()["data"]:
        httpx.delete(f"{quota_stack.gateway_url}/v1/files/{file['id']}", headers=_auth(key))


def test_a_file_of_cr_ended_lines_is_not_held_whole(quota_stack: Stack) -> None:
    """A second review: lines ended by a bare CR (the runner reads them as lines) were held whole by the
    upload's scrubber, 20 MB → +200 MB peak RSS."""
    pid = quota_stack.processes["gateway"].popen.pid
    key = _key(quota_stack)
    assert _upload(quota_stack, key, _line(0)).status_code == 200  # warm the route
    before = _peak_rss_kib(pid)
    body = b"".join(_line(i, pad=200).rstrip(b"\n").replace(b"x", "\u00e9".encode()) + b"\r" for i in range(30_000))
    got = _upload(quota_stack, key, body)
    grown_mib = (_peak_rss_kib(pid) - before) / 1024
    assert got.status_code == 200, got.text
    assert grown_mib < 48, f"peak RSS grew {grown_mib:.0f} MiB"
    content = httpx.get(f"{quota_stack.gateway_url}/v1/files/{got.json()['id']}/content", headers=_auth(key))
    assert content.content == body
    httpx.delete(f"{quota_stack.gateway_url}/v1/files/{got.json()['id']}", headers=_auth(key))


@pytest.fixture(scope="module")
def output_stack(
    tmp_path_factory: pytest.TempPathFactory, database_url: str, redis_url: str, slow_sim: str
) -> Iterator[Stack]:
    """Small file and job quotas, with a batch runner and job workers."""
    stack = make_stack(
        tmp_path_factory.mktemp("r3-storage-out"),
        database_url,
        redis_url,
        slow_sim,
        IIR_GATEWAY_WORKERS="1",
        IIR_QUOTA_FILES_PER_KEY="3",
        IIR_QUOTA_FILE_BYTES_PER_KEY=str(2 * MB),
        IIR_QUOTA_JOB_BYTES_PER_KEY=str(50 * 1024),
        IIR_STORAGE_MAX_BYTES=str(50 * MB),
        IIR_BATCH_CONCURRENCY="4",
        IIR_JOB_WORKERS="2",
    )
    yield stack
    stack.stop()


def _usage(stack: Stack, kind: str, scope: str) -> tuple[int, int]:
    prefix = stack.env["IIR_REDIS_PREFIX"]
    client = redis.Redis.from_url(stack.redis_url)
    try:
        base = f"{prefix}quota:{'bytes' if scope == 'global' else kind}:{scope}"
        return int(client.zcard(base)), int(client.hget(f"{base}:bytes", "=") or 0)
    finally:
        client.close()


def _made_key(stack: Stack, **settings: object) -> dict[str, Any]:
    body = {"name": f"r3-storage-{uuid.uuid4().hex[:6]}", **settings}
    made = httpx.post(f"{stack.gateway_url}/api/v1/apikeys", json=body, headers=_auth(MASTER_KEY), timeout=10)
    assert made.status_code == 201, made.text
    return dict(made.json())


def test_batch_output_counts_in_every_quota_and_a_full_key_cannot_start_one(output_stack: Stack) -> None:
    """A key at 3/3 files started a batch whose output then took it (and the global budget) past its quota;
    the lines' results stayed in Redis, counted nowhere."""
    url = output_stack.gateway_url
    team = httpx.post(
        f"{url}/api/v1/teams", json={"name": f"t-{uuid.uuid4().hex[:8]}"}, headers=_auth(MASTER_KEY), timeout=10
    ).json()
    made = _made_key(output_stack, team_id=team["id"])
    key, key_id = made["key"], made["id"]
    lines = b"".join(
        _line(i).replace(b'"messages"', b'"max_tokens":300,"ignore_eos":true,"messages"') for i in range(30)
    )
    files = [_upload(output_stack, key, lines if i == 0 else _line(0)).json()["id"] for i in range(3)]
    batch = {"input_file_id": files[0], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    full = httpx.post(f"{url}/v1/batches", json=batch, headers=_auth(key))
    assert full.status_code == 429 and full.json()["error"]["code"] == "insufficient_quota", full.text
    assert "3 of 3 files" in full.json()["error"]["message"]

    httpx.delete(f"{url}/v1/files/{files[2]}", headers=_auth(key))
    global_before = _usage(output_stack, "files", "global")[1]
    started = httpx.post(f"{url}/v1/batches", json=batch, headers=_auth(key))
    assert started.status_code == 200, started.text
    batch_id = started.json()["id"]

    def ended() -> dict[str, Any] | None:
        got = httpx.get(f"{url}/v1/batches/{batch_id}", headers=_auth(key)).json()
        return got if got["status"] in ("completed", "failed", "expired", "cancelled") else None

    done = wait_for(ended, timeout=60, interval=0.2, what="the batch to end")
    assert done["status"] == "completed" and done["request_counts"]["completed"] == 30, done
    output = httpx.get(f"{url}/v1/files/{done['output_file_id']}/content", headers=_auth(key)).content
    assert [orjson.loads(line)["custom_id"] for line in output.splitlines()] == [f"r{i}" for i in range(30)]
    size = len(output)
    held = [httpx.get(f"{url}/v1/files/{f}", headers=_auth(key)).json()["bytes"] for f in files[:2]]
    # The output counts in the key's, the team's and the global storage.
    assert _usage(output_stack, "files", f"key:{key_id}") == (3, sum(held) + size)
    assert _usage(output_stack, "files", f"team:{team['id']}") == (3, sum(held) + size)
    assert _usage(output_stack, "files", "global")[1] >= global_before + size
    # The lines' results are gone from Redis once the output holds them, and no longer counted.
    client = redis.Redis.from_url(output_stack.redis_url)
    prefix = output_stack.env["IIR_REDIS_PREFIX"]
    assert not client.exists(f"{prefix}batches:{batch_id}:results")
    client.close()
    assert _usage(output_stack, "batches", f"key:{key_id}") == (0, 0)
    # Full again (3/3): no new batch.
    again = httpx.post(f"{url}/v1/batches", json=batch, headers=_auth(key))
    assert again.status_code == 429 and again.json()["error"]["code"] == "insufficient_quota"


def test_job_results_count_in_the_jobs_quota(output_stack: Stack) -> None:
    """Jobs of 6,000 tokens were charged their requests' bytes only: a key with 100 KB kept 400 KB. Here a
    key may keep 50 KiB of jobs; one result is about 30 KB, and its token events about 1 MB."""
    made = _made_key(output_stack)
    key, url = made["key"], output_stack.gateway_url
    job = {
        "model": f"local/{SERVED}",
        "messages": [{"role": "user", "content": "tell"}],
        "max_tokens": 6000,
        "ignore_eos": True,
    }
    ids = []
    for _ in range(1):
        queued = httpx.post(f"{url}/v1/async/chat/completions", json=job, headers=_auth(key), timeout=10)
        assert queued.status_code == 202, queued.text
        job_id = queued.json().get("id") or queued.json()["job_id"]
        ids.append(job_id)

        def finished(job_id: str = job_id) -> dict[str, Any] | None:
            got = httpx.get(f"{url}/v1/async/chat/completions/{job_id}", headers=_auth(key), timeout=10).json()
            return got if got.get("status") in ("completed", "failed", "cancelled") else None

        assert wait_for(finished, timeout=60, interval=0.2, what="the job")["status"] == "completed"
    count, used = _usage(output_stack, "jobs", f"key:{made['id']}")
    assert count == 1 and used > 50 * 1024, (count, used)  # the result counts: the key is over
    # So do their event streams (a token event per chunk, kept as long as the result): a second review
    # found 2 jobs of n=16 kept 41 MB of events against a quota that counted 1 MB.
    client = redis.Redis.from_url(output_stack.redis_url)
    try:
        prefix = output_stack.env["IIR_REDIS_PREFIX"]
        events = sum(
            len((fields or {})[b"data"])
            for job_id in ids
            for _, fields in client.xrange(f"{prefix}job:{job_id}:events") or []
        )
    finally:
        client.close()
    assert events > 0 and used >= events, (used, events)
    refused = httpx.post(f"{url}/v1/async/chat/completions", json=job, headers=_auth(key), timeout=10)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "insufficient_quota", refused.text
