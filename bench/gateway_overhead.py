"""The gateway's cost, measured side by side with a direct call to the simulated backend (zero delay).

For non-streaming and streaming chat completions at concurrency 1, 32 and 256: requests per second and
latency p50/p99 directly and through the gateway (auth on, a key without limits, cache miss is
impossible: the key is warm), the added latency, the time to first token added by streaming, and the
gateway's memory. Load comes from wrk (`make bench-tools`); TTFT from an asyncio client. Medians of
several rounds. Usage: .venv/bin/python bench/gateway_overhead.py [--rounds 3] [--duration 5] [--workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import aiohttp

from iir_dev.stack import throwaway_stack

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "llama-3-8b-instruct"
UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def body(stream: bool, model: str) -> str:
    return json.dumps(
        {"model": model, "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 16, "stream": stream}
    )


def wrk(url: str, key: str, payload: str, connections: int, duration: int, workdir: Path) -> dict[str, float]:
    script = workdir / "post.lua"
    script.write_text(
        f'wrk.method = "POST"\nwrk.body = {json.dumps(payload)}\n'
        f'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {key}"\n'
    )
    threads = "2" if connections >= 32 else "1"
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * UNITS[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": pct("50"), "p99_ms": pct("99"), "errors": float(errors.group(1)) if errors else 0}


async def ttft(url: str, key: str, model: str, concurrency: int, requests: int) -> float:
    """Median time to the first SSE data line, in ms."""
    samples: list[float] = []
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    payload = body(True, model)
    async with aiohttp.ClientSession() as session:

        async def one() -> None:
            start = time.perf_counter()
            async with session.post(url, data=payload, headers=headers) as resp:
                async for line in resp.content:
                    if line.startswith(b"data: {"):
                        samples.append((time.perf_counter() - start) * 1000)
                        break
                await resp.read()

        for _ in range(requests // concurrency):
            await asyncio.gather(*(one() for _ in range(concurrency)))
    return statistics.median(samples)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--access-log", choices=("true", "false"), default="true")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: run `make bench-tools`")
    env = {
        "IIR_GATEWAY_WORKERS": str(args.workers),
        "IIR_ACCESS_LOG": args.access_log,
        "IIR_LOG_LEVEL": "WARNING" if args.access_log == "false" else "INFO",
    }
    rows = []
    with throwaway_stack("iir-bench-", "iir_bench", env=env) as stack:
        work = stack.workdir
        key = stack.create_key("bench")
        direct_url, gateway_url = f"{stack.sim_url}/v1/chat/completions", f"{stack.gateway_url}/v1/chat/completions"
        for stream in (False, True):
            for conc in (1, 32, 256):
                rounds = []
                for _ in range(args.rounds):
                    d = wrk(direct_url, key, body(stream, MODEL), conc, args.duration, work)
                    g = wrk(gateway_url, key, body(stream, f"local/{MODEL}"), conc, args.duration, work)
                    rounds.append((d, g))
                med = {
                    f"{side}_{k}": statistics.median(r[i][k] for r in rounds)
                    for i, side in enumerate(("direct", "gateway"))
                    for k in ("rps", "p50_ms", "p99_ms", "errors")
                }
                med.update(
                    stream=stream,
                    concurrency=conc,
                    added_p50_ms=med["gateway_p50_ms"] - med["direct_p50_ms"],
                    added_p99_ms=med["gateway_p99_ms"] - med["direct_p99_ms"],
                )
                rows.append(med)
        ttfts = []
        for conc in (1, 32):
            d = statistics.median(asyncio.run(ttft(direct_url, key, MODEL, conc, 256)) for _ in range(args.rounds))
            g = statistics.median(
                asyncio.run(ttft(gateway_url, key, f"local/{MODEL}", conc, 256)) for _ in range(args.rounds)
            )
            ttfts.append({"concurrency": conc, "direct_ttft_ms": d, "gateway_ttft_ms": g, "added_ttft_ms": g - d})
        main_pid = stack.processes["gateway"].popen.pid
        workers = subprocess.run(["pgrep", "-P", str(main_pid)], capture_output=True, text=True).stdout.split()
        memory = sum(rss_mib(int(p)) for p in [main_pid, *workers])
    print(f"gateway workers: {args.workers}, access log: {args.access_log}, rounds: {args.rounds} × {args.duration}s")
    print(
        f"{'mode':<10} {'conc':>4} | {'direct rps':>10} {'p50':>7} {'p99':>7} | {'gateway rps':>11} {'p50':>7} "
        f"{'p99':>7} | {'added p50':>9} {'p99':>7} ms"
    )
    for r in rows:
        mode = "stream" if r["stream"] else "unary"
        print(
            f"{mode:<10} {r['concurrency']:>4} | {r['direct_rps']:>10.0f} {r['direct_p50_ms']:>7.2f} "
            f"{r['direct_p99_ms']:>7.2f} | {r['gateway_rps']:>11.0f} {r['gateway_p50_ms']:>7.2f} "
            f"{r['gateway_p99_ms']:>7.2f} | {r['added_p50_ms']:>9.2f} {r['added_p99_ms']:>7.2f}"
        )
    for t in ttfts:
        print(
            f"TTFT at concurrency {t['concurrency']}: direct {t['direct_ttft_ms']:.2f} ms, gateway "
            f"{t['gateway_ttft_ms']:.2f} ms, added {t['added_ttft_ms']:.2f} ms"
        )
    print(f"gateway memory (RSS, all worker processes): {memory:.0f} MiB")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"gateway_overhead_w{args.workers}.json"
    out.write_text(
        json.dumps(
            {
                "workers": args.workers,
                "access_log": args.access_log,
                "rows": rows,
                "ttft": ttfts,
                "gateway_rss_mib": memory,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
