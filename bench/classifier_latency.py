"""Classifier latency per prompt over gRPC, alone and with concurrent requests (micro-batched).

Starts the real classifier service as a process (2 CPU threads) and sends it prompts from the
held-out split, short and long, at concurrency 1, 4 and 16. Targets: p50 under 10 ms and p99 under
30 ms per prompt. Medians of several rounds. Usage: .venv/bin/python bench/classifier_latency.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import grpc

from iir.v1 import classifier_pb2, classifier_pb2_grpc
from iir_classifier.dataset import load, split
from iir_dev.stack import REPO, free_port, grpc_serving

RESULTS = Path(__file__).resolve().parent / "results"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(port: int, prompts: list[str], concurrency: int, requests: int) -> dict[str, float]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = classifier_pb2_grpc.ClassifierServiceStub(channel)
        samples: list[float] = []

        async def one(i: int) -> None:
            request = classifier_pb2.ClassifyRequest(
                messages=[classifier_pb2.Turn(role="user", content=prompts[i % len(prompts)])]
            )
            start = time.perf_counter()
            await stub.Classify(request, timeout=5)
            samples.append((time.perf_counter() - start) * 1000)

        await asyncio.gather(*(one(i) for i in range(concurrency)))  # warm up
        samples.clear()
        start = time.perf_counter()
        for base in range(0, requests, concurrency):
            await asyncio.gather(*(one(base + i) for i in range(concurrency)))
        elapsed = time.perf_counter() - start
    return {"p50_ms": statistics.median(samples), "p99_ms": percentile(samples, 0.99), "per_s": len(samples) / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    _, held = split(load())
    prompts = [e.text for e in held] + ["Please summarize the following report. " + "The quarter went well. " * 400]
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "iir_classifier"],
        cwd=REPO,
        env={**os.environ, "IIR_CLASSIFIER_PORT": str(port), "IIR_LOG_LEVEL": "WARNING"},
    )
    try:
        deadline = time.monotonic() + 60
        while not grpc_serving(port, "iir.v1.ClassifierService"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the classifier did not start (is the model built? `make classifier-model`)")
            time.sleep(0.2)
        rows = []
        for concurrency in (1, 4, 16):
            rounds = [asyncio.run(run(port, prompts, concurrency, args.requests)) for _ in range(args.rounds)]
            rows.append(
                {
                    "concurrency": concurrency,
                    **{k: statistics.median(r[k] for r in rounds) for k in ("p50_ms", "p99_ms", "per_s")},
                }
            )
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"classifier over gRPC, {args.rounds} rounds × {args.requests} prompts (median of rounds)")
    print(f"{'concurrency':>11} | {'p50 ms':>7} {'p99 ms':>7} | {'prompts/s':>9}")
    for r in rows:
        print(f"{r['concurrency']:>11} | {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} | {r['per_s']:>9.0f}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "classifier_latency.json"
    out.write_text(json.dumps({"rows": rows, "rounds": args.rounds}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
