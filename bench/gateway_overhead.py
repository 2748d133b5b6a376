"""The gateway's cost, measured in one run beside a direct call to the simulated backend (zero delay)
and beside its peers in front of the same backend: vllm-router (Rust) and LiteLLM proxy, installed by
`make bench-tools`.

For non-streaming and streaming chat completions at concurrency 1, 32 and 256, with answers of `--tokens`
tokens each, for each target: requests per second, latency p50/p99 and what it adds to the direct call,
CPU time per request and per answer token (the target's own processes, from /proc), the time to first
token added by streaming, and memory. IIR runs
with its default settings (auth on with a warm key, limits, scrubbing, cache lookup, metrics, access
log). Load comes from wrk; TTFT from an asyncio client. Medians of several rounds, targets interleaved
within each round so they share the machine's noise.
Usage: .venv/bin/python bench/gateway_overhead.py [--rounds 3] [--duration 5] [--workers 1] [--replicas 1] [--no-peers]
       [--concurrency 1,32,256] [--modes unary,stream] [--tokens 16,256,2048] [--peers vllm-router,litellm]
       [--baseline DIR] [--without scrub,access-log]
With `--baseline DIR` (a checkout of an earlier commit, e.g. `git worktree add /tmp/base <commit>`), a second
IIR gateway runs that checkout's gateway code beside this one, on the same services, as the target `iir@base`:
a change's cost per request, old and new in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from peers import Peer, cpu_seconds, rss_mib, start_peers

from iir_dev.stack import throwaway_stack

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "llama-3-8b-instruct"
UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


# What `--without` turns off, in a gateway of its own: what each costs is IIR's CPU less that gateway's.
FEATURES = {"scrub": {"IIR_SCRUB_MODE": "off"}, "access-log": {"IIR_ACCESS_LOG": "false"}}


def body(stream: bool, model: str, tokens: int = 16) -> str:
    """A chat completion whose answer is exactly `tokens` tokens long (vLLM's `ignore_eos`)."""
    return json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": "Hello there"}],
            "max_tokens": tokens,
            "ignore_eos": True,
            "stream": stream,
        }
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
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{duration}s",
            "--timeout",
            "60s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * UNITS[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    size, unit = re.search(r"requests in [\d.]+\w+, ([\d.]+)([KMGT]?B) read", out).groups()  # type: ignore[union-attr]
    return {
        "bytes_read": float(size) * 1024 ** "BKMGT".index(unit[0]) if unit != "B" else float(size),
        "rps": rps,
        "p50_ms": pct("50"),
        "p99_ms": pct("99"),
        "errors": float(errors.group(1)) if errors else 0,
        "requests": requests,
    }


async def ttft(url: str, key: str, model: str, concurrency: int, requests: int) -> float:
    """Median time to the first SSE data line, in ms."""
    samples: list[float] = []
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    payload = body(True, model)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:

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


def answer_bytes(target: Peer, payload: str) -> int:
    """The bytes of one whole answer from `target` (status line, headers and body), as wrk counts them."""
    url = urlsplit(target.url)
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {target.key}\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=60) as conn:
        conn.sendall(head.encode() + payload.encode())
        return sum(len(part) for part in iter(lambda: conn.recv(1 << 16), b""))


def measure(target: Peer, payload: str, conc: int, duration: int, work: Path, tokens: int) -> dict[str, float]:
    """One wrk run against `target`, with the CPU its processes spent per request, and per answer token
    delivered: the bytes wrk read over the bytes of one whole answer, so streams cut when the run ends count
    for what they sent (with long streams at high concurrency, they are most of them)."""
    whole = answer_bytes(target, payload)
    before = cpu_seconds(target.pid)
    result = wrk(f"{target.url}/v1/chat/completions", target.key, payload, conc, duration, work)
    spent = cpu_seconds(target.pid) - before
    result["cpu_us_per_request"] = spent / max(1, result["requests"]) * 1e6
    result["cpu_us_per_token"] = spent / max(1.0, result["bytes_read"] / whole * tokens) * 1e6
    return result


def versus_router(row: dict[str, object], rows: list[dict[str, object]]) -> str:
    """`row`'s CPU per request as a multiple of vllm-router's in the same mode, concurrency and length."""
    same = ("stream", "concurrency", "tokens")
    router = next((r for r in rows if r["target"] == "vllm-router" and all(r[k] == row[k] for k in same)), None)
    if router is None or row["target"] in ("direct", "vllm-router"):
        return ""
    return f"{float(row['cpu_us_per_request']) / float(router['cpu_us_per_request']):.2f}×"  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--replicas", type=int, default=1, help="simulated vLLM replicas behind IIR's model")
    parser.add_argument("--picker", default="", help="IIR_ENDPOINT_PICKER (default: the gateway's default)")
    parser.add_argument("--access-log", choices=("true", "false"), default="true")
    parser.add_argument("--no-peers", action="store_true", help="IIR and the backend only")
    parser.add_argument(
        "--peers", default="vllm-router,litellm", help="which peers to start (also floor-asgi, floor-raw)"
    )
    parser.add_argument("--concurrency", default="1,32,256", help="comma-separated wrk connection counts")
    parser.add_argument("--modes", default="unary,stream", help="unary, stream or both")
    parser.add_argument("--tokens", default="256", help="comma-separated answer lengths, in tokens")
    parser.add_argument("--baseline", type=Path, help="a checkout whose gateway runs beside this one as iir@base")
    parser.add_argument(
        "--without",
        default="",
        help=f"features ({', '.join(FEATURES)}), each off in a gateway of its own beside IIR (iir-no-FEATURE)",
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: run `make bench-tools`")
    env = {"IIR_GATEWAY_WORKERS": str(args.workers), "IIR_ACCESS_LOG": args.access_log}
    if args.picker:
        env["IIR_ENDPOINT_PICKER"] = args.picker
    rows: list[dict[str, object]] = []
    ttfts: list[dict[str, object]] = []
    memory: dict[str, float] = {}
    with throwaway_stack("iir-bench-", "iir_bench", env=env, sim_replicas=args.replicas) as stack:
        work = stack.workdir
        key = stack.create_key("bench")
        direct = Peer("direct", stack.sim_url, stack.processes["simbackend"].popen.pid, key)
        iir = Peer("iir", stack.gateway_url, stack.processes["gateway"].popen.pid, key)
        base = []
        if args.baseline:
            roots = [args.baseline / "services" / "gateway", args.baseline / "libs"]
            url = stack.start_gateway_replica("gateway-base", env={"PYTHONPATH": os.pathsep.join(map(str, roots))})
            base = [Peer("iir@base", url, stack.processes["gateway-base"].popen.pid, key)]
        for feature in filter(None, args.without.split(",")):
            url = stack.start_gateway_replica(f"gateway-no-{feature}", env=FEATURES[feature])
            base.append(Peer(f"iir-no-{feature}", url, stack.processes[f"gateway-no-{feature}"].popen.pid, key))
        with contextlib.ExitStack() as running:
            peers = (
                []
                if args.no_peers
                else running.enter_context(start_peers(stack.sim_url, MODEL, work, tuple(args.peers.split(","))))
            )
            targets = [direct, iir, *base, *peers]
            names = {t.name: (f"local/{MODEL}" if t.name.startswith("iir") else MODEL) for t in targets}
            for tokens in [int(n) for n in args.tokens.split(",")]:
                for stream in [m == "stream" for m in args.modes.split(",")]:
                    for conc in [int(c) for c in args.concurrency.split(",")]:
                        rounds: dict[str, list[dict[str, float]]] = {t.name: [] for t in targets}
                        for _ in range(args.rounds):
                            for t in targets:
                                payload = body(stream, names[t.name], tokens)
                                rounds[t.name].append(measure(t, payload, conc, args.duration, work, tokens))
                        med = {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in rounds.items()}
                        mode = "stream" if stream else "unary"
                        for n, m in med.items():
                            print(f"  {n} {mode} c{conc} {tokens} tokens: {m['rps']:.0f} rps", flush=True)
                        for n, m in med.items():
                            if n != "direct":
                                m["added_p50_ms"] = m["p50_ms"] - med["direct"]["p50_ms"]
                                m["added_p99_ms"] = m["p99_ms"] - med["direct"]["p99_ms"]
                            rows.append({"target": n, "stream": stream, "concurrency": conc, "tokens": tokens, **m})
            for conc in (1, 32):
                got = {
                    t.name: statistics.median(
                        asyncio.run(ttft(f"{t.url}/v1/chat/completions", t.key, names[t.name], conc, 256))
                        for _ in range(args.rounds)
                    )
                    for t in targets
                }
                for n, v in got.items():
                    ttfts.append({"target": n, "concurrency": conc, "ttft_ms": v, "added_ttft_ms": v - got["direct"]})
            memory = {t.name: rss_mib(t.pid) for t in targets}
    print(
        f"IIR gateway workers: {args.workers}, replicas: {args.replicas}, access log: {args.access_log}, "
        f"rounds: {args.rounds} × {args.duration}s"
    )
    print(
        f"{'target':<17} {'mode':<6} {'conc':>4} {'tokens':>6} | {'rps':>8} {'p50':>7} {'p99':>8} | {'added p50':>9} "
        f"{'p99':>8} ms | {'CPU/req':>8} {'CPU/token':>9} µs | {'vs router':>9}"
    )
    for r in rows:
        added = f"{r['added_p50_ms']:>9.2f} {r['added_p99_ms']:>8.2f}" if "added_p50_ms" in r else f"{'':>9} {'':>8}"
        print(
            f"{r['target']:<17} {'stream' if r['stream'] else 'unary':<6} {r['concurrency']:>4} {r['tokens']:>6} | "
            f"{r['rps']:>8.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>8.2f} | {added} ms | "
            f"{r['cpu_us_per_request']:>8.0f} {r['cpu_us_per_token']:>9.2f} µs | {versus_router(r, rows):>9}"
        )
    for t in ttfts:
        print(
            f"TTFT {t['target']:<17} concurrency {t['concurrency']:>3}: {t['ttft_ms']:.2f} ms, "
            f"added {t['added_ttft_ms']:.2f} ms"
        )
    for n, m in memory.items():
        print(f"RSS {n:<17} {m:.0f} MiB (all its processes)")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"gateway_overhead_w{args.workers}_r{args.replicas}_t{args.tokens.replace(',', '-')}.json"
    out.write_text(
        json.dumps(
            {
                "workers": args.workers,
                "replicas": args.replicas,
                "access_log": args.access_log,
                "tokens": args.tokens,
                "machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg()},
                "rows": rows,
                "ttft": ttfts,
                "rss_mib": memory,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
