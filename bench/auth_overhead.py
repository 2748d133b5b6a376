"""Cost per request of authentication with a warm cache plus RPM/TPM admission in Redis.

Runs the real auth service (PostgreSQL) as a process and the gateway's Authenticator and RateLimiter in
this process against real Redis, exactly as a gateway worker calls them. Target: p50 under 0.5 ms.
Usage: .venv/bin/python bench/auth_overhead.py [--rounds 5] [--requests 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path

import grpc
import redis.asyncio as aioredis

from iir_dev.stack import Stack, throwaway_stack
from iir_gateway.accounting.rate_limiter import RateLimiter
from iir_gateway.keys.authenticator import Authenticator
from iir_gateway.metrics import GatewayMetrics

RESULTS = Path(__file__).resolve().parent / "results"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(stack: Stack, redis_url: str, key: str, rounds: int, requests: int) -> dict[str, object]:
    redis = aioredis.from_url(redis_url)
    metrics = GatewayMetrics()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports.auth}")
    prefix = f"iir-bench-{int(time.time())}:"
    auth = Authenticator(channel, redis, metrics, timeout_s=2, failure_limit=20, failure_window_s=60, prefix=prefix)
    limiter = RateLimiter(redis, metrics, prefix)
    follower = asyncio.create_task(auth.follow_revocations())
    while not auth.subscribed:
        await asyncio.sleep(0.01)
    headers = {"authorization": f"Bearer {key}"}
    principal = await auth.authenticate(headers, "127.0.0.1")  # warms the cache
    assert principal.limited, "the benchmark key must carry limits"
    runs = []
    for _ in range(rounds):
        auth_only: list[float] = []
        both: list[float] = []
        for _ in range(requests):
            t0 = time.perf_counter()
            p = await auth.authenticate(headers, "127.0.0.1")
            t1 = time.perf_counter()
            await limiter.admit(p, 20)
            t2 = time.perf_counter()
            auth_only.append((t1 - t0) * 1000)
            both.append((t2 - t0) * 1000)
        runs.append(
            {
                "auth_p50_ms": percentile(auth_only, 0.5),
                "p50_ms": percentile(both, 0.5),
                "p99_ms": percentile(both, 0.99),
            }
        )
    follower.cancel()
    await channel.close()
    await redis.aclose()
    return {
        "rounds": runs,
        "median_p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "median_p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "median_auth_only_p50_ms": statistics.median(r["auth_p50_ms"] for r in runs),
        "requests_per_round": requests,
        "target_p50_ms": 0.5,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    master = "iir-bench-master-" + os.urandom(16).hex()
    with throwaway_stack("iir-bench-", "iir_bench", master_key=master) as stack:
        import httpx

        key = httpx.post(
            f"{stack.gateway_url}/api/v1/apikeys",
            json={"name": "bench", "rpm_limit": 10**9, "tpm_limit": 10**12},
            headers={"Authorization": f"Bearer {master}"},
        ).json()["key"]
        result = asyncio.run(measure(stack, stack.redis_url, key, args.rounds, args.requests))
    print(f"{'round':>5} {'auth p50 ms':>12} {'auth+limits p50 ms':>19} {'p99 ms':>8}")
    for i, r in enumerate(result["rounds"], 1):  # type: ignore[arg-type]
        print(f"{i:>5} {r['auth_p50_ms']:>12.4f} {r['p50_ms']:>19.4f} {r['p99_ms']:>8.4f}")
    print(f"median p50 {result['median_p50_ms']:.4f} ms (target < 0.5 ms), median p99 {result['median_p99_ms']:.4f} ms")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "auth_overhead.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
