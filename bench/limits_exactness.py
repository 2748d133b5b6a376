"""How exactly a tokens-per-minute limit holds: 1, 2 and 4 gateway processes sharing auth and Redis,
unary, streamed and async-job traffic spread over them, 16 clients at once.

For each case a fresh key with `--tpm` tokens per minute takes traffic for `--seconds` (jobs: twice as
many as one bucket holds are queued at once, and followed until the last is final); the tokens the answers
report are divided by what the limit allows over that time (a full bucket at the start plus the refill).
The goal is 1.00 or just under it, ± one request.
Usage: .venv/bin/python bench/limits_exactness.py [--tpm 3000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from iir_dev.stack import throwaway_stack

RESULTS = Path(__file__).resolve().parent / "results"
MASTER = "iir-bench-master-key-0123456789abcdef"
BODY = {
    "model": "local/llama-3-8b-instruct",
    "messages": [{"role": "user", "content": "count to ten"}],
    "max_tokens": 31,
}
CLIENTS = 16


def new_key(gateway: str, tpm: int) -> str:
    resp = httpx.post(
        f"{gateway}/api/v1/apikeys",
        json={"name": "bench", "tpm_limit": tpm},
        headers={"Authorization": f"Bearer {MASTER}"},
    )
    resp.raise_for_status()
    return str(resp.json()["key"])


async def unary(c: httpx.AsyncClient, url: str, key: str) -> int:
    resp = await c.post(f"{url}/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {key}"})
    return int(resp.json()["usage"]["total_tokens"]) if resp.status_code == 200 else 0


async def streamed(c: httpx.AsyncClient, url: str, key: str) -> int:
    body = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
    total = 0
    async with c.stream(
        "POST", f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
    ) as resp:
        async for line in resp.aiter_lines():
            if line.startswith("data: {") and '"usage":{' in line:
                total = orjson.loads(line[6:])["usage"]["total_tokens"]
    return total


async def traffic(gateways: list[str], key: str, kind: str, seconds: float, jobs_count: int) -> tuple[int, float]:
    """Tokens the answers report, and over how many seconds."""
    urls = itertools.cycle(gateways)
    started = time.monotonic()
    jobs: list[str] = []
    total = 0
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as c:

        async def client() -> None:
            nonlocal total
            while time.monotonic() - started < seconds:
                url = next(urls)
                # Awaited first: `total += await …` would read `total` before the wait and lose updates.
                got = await (unary(c, url, key) if kind == "unary" else streamed(c, url, key))
                total += got

        if kind == "job":
            for i in range(jobs_count):
                resp = await c.post(
                    f"{gateways[i % len(gateways)]}/v1/async/chat/completions",
                    json=BODY,
                    headers={"Authorization": f"Bearer {key}"},
                )
                if resp.status_code == 202:
                    jobs.append(resp.json()["job_id"])
        else:
            await asyncio.gather(*(client() for _ in range(CLIENTS)))
        while jobs:
            states = [
                (
                    await c.get(
                        f"{gateways[0]}/v1/async/chat/completions/{j}", headers={"Authorization": f"Bearer {key}"}
                    )
                ).json()
                for j in jobs
            ]
            if all(s["status"] in ("completed", "failed", "cancelled") for s in states):
                total = sum(s["result"]["usage"]["total_tokens"] for s in states if s["status"] == "completed")
                break
            await asyncio.sleep(0.5)
    return total, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tpm", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    env = {
        "IIR_REDIS_PREFIX": f"iir-bench-{int(time.time())}:",
        "IIR_JOB_MAX_QUEUED_PER_KEY": "0",
        "IIR_ACCESS_LOG": "false",
    }
    rows: list[dict[str, Any]] = []
    with throwaway_stack("iir-limits-", "iir_bench_limits", master_key=MASTER, env=env) as stack:
        gateways = [stack.gateway_url]
        for count in (1, 2, 4):
            while len(gateways) < count:
                gateways.append(
                    stack.start_gateway_replica(f"gateway-{len(gateways)}", env={"IIR_ACCESS_LOG": "false"})
                )
            for kind in ("unary", "streamed", "job"):
                key = new_key(gateways[0], args.tpm)
                tokens, elapsed = asyncio.run(traffic(gateways, key, kind, args.seconds, 2 * args.tpm // 40))
                allowed = args.tpm + args.tpm * elapsed / 60
                rows.append(
                    {
                        "gateways": count,
                        "traffic": kind,
                        "tokens": tokens,
                        "seconds": round(elapsed, 1),
                        "allowed": round(allowed),
                        "ratio": round(tokens / allowed, 3),
                    }
                )
                print(
                    f"{count} gateway(s) {kind:>8}: {tokens:6d} tokens in {elapsed:5.1f}s, "
                    f"allowed {allowed:7.0f} → ratio {tokens / allowed:.3f}",
                    flush=True,
                )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "limits_exactness.json").write_text(json.dumps({"tpm": args.tpm, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
