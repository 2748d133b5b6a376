"""IIR beside vllm-router, SMG and a plain Kubernetes Service (random) in front of the same simulated fleet.

Starts N simulated vLLM replicas on loopback (`fleet_replicas.py`), then for each workload (`fleet_workloads.py`)
and rate, and for each target and policy (`fleet_targets.py`): empties the replicas' prefix caches, starts the
target afresh (every router starts cold), plays the workload through it (`fleet_load.py`) and reads the
replicas' own counters before and after. Prints a table per workload and rate; writes
bench/results/fleet-<timestamp>.json, a list of rows.
Rates are fractions of the fleet's capacity (`light` 0.4, `heavy` 0.8, `overload` 1.3, or a number).
Usage: .venv/bin/python bench/fleet.py [--quick] [--replicas 8] [--workloads chat,agentic] [--rates heavy]
       [--targets iir,vllm-router:kv_aware,smg,random] [--seed 1] [--time-scale 10] [--duration 60]
       [--gateways 2 --workers 2] [--bursty]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import fleet_workloads as workloads
from fleet_load import Result, percentile, play
from fleet_replicas import Fleet, FleetOptions, deltas, engine_model, running_fleet
from fleet_targets import Choice, IirServices, Started, available, iir_services, parse_choices, start_iir, start_peer

from iir_dev.fleet_tokenizer import build as build_tokenizer

RESULTS = Path(__file__).resolve().parent / "results"
RATES = {"light": 0.4, "heavy": 0.8, "overload": 1.3}
FULL: dict[str, object] = {
    "replicas": 8,
    "rates": "light,heavy,overload",
    "targets": "iir,vllm-router,smg,random",
    "time_scale": 10.0,
    "duration": 60.0,
    "cutoff": 2.0,
}
# Half the fleet at a quarter of the time scale: twice the requests per second of the full run (well within
# 2 cores), answered four times as fast. Agentic sessions in progress would take half a minute to join at
# the heavy rate (a million tokens of history): light.
QUICK: dict[str, object] = {
    "replicas": 4,
    "rates": "heavy,agentic=light",
    "targets": "iir:default,vllm-router:cache_aware,smg,random",
    "time_scale": 2.5,
    "duration": 12.0,
    "cutoff": 1.5,
}


def summarize(results: list[Result], counters: list[dict[str, float]]) -> dict[str, float | int | None]:
    """One row's figures: latency percentiles of the requests that succeeded, output tokens per second over
    the run, the replicas' prefix-cache hit rate and the spread of requests over them (max / mean), all
    after the warm-up (the requests of sessions joining count only in errors)."""
    errors = sum(r.error is not None for r in results)
    results = [r for r in results if not r.joining]
    ok = [r for r in results if r.error is None]
    ttft = [1000 * r.ttft_s for r in ok if r.ttft_s is not None]
    e2e = [1000 * r.e2e_s for r in ok if r.e2e_s is not None]
    span = max((r.start_s + (r.e2e_s or 0) for r in ok), default=0) - min((r.start_s for r in ok), default=0)
    queries = sum(c["queries"] for c in counters)
    per_replica = [c["requests"] for c in counters]
    mean = sum(per_replica) / len(per_replica) if per_replica else 0

    def clean(value: float) -> float | None:
        return None if math.isnan(value) else round(value, 1)

    return {
        "ttft_p50_ms": clean(percentile(ttft, 50)),
        "ttft_p90_ms": clean(percentile(ttft, 90)),
        "ttft_p99_ms": clean(percentile(ttft, 99)),
        "e2e_p50_ms": clean(percentile(e2e, 50)),
        "e2e_p99_ms": clean(percentile(e2e, 99)),
        "output_tokens_per_s": round(sum(r.output_tokens for r in ok) / span, 1) if span > 0 else None,
        "prefix_hit_rate": round(sum(c["hits"] for c in counters) / queries, 4) if queries else None,
        "requests": len(results),
        "errors": errors,
        "load_spread": round(max(per_replica) / mean, 2) if mean else None,
    }


@contextlib.contextmanager
def started(choice: Choice, fleet: Fleet, iir: IirServices | None, args: argparse.Namespace) -> Iterator[Started]:
    if choice.target == "iir":
        assert iir is not None
        with start_iir(iir, fleet, choice.policy, args.gateways, args.workers) as s:
            yield s
    else:
        with start_peer(choice, fleet, fleet.workdir) as s:
            yield s


def run_one(
    choice: Choice, fleet: Fleet, iir: IirServices | None, work: workloads.Workload, args: argparse.Namespace
) -> dict[str, float | int | None]:
    fleet.reset()
    with started(choice, fleet, iir, args) as target:
        before: list[dict[str, float]] = []
        cutoff = args.duration * args.cutoff
        results = asyncio.run(play(target.endpoint, work, cutoff, args.timeout, lambda: before.extend(fleet.scrape())))
        fleet.reset()  # the last answers' counters are written when they end
        after = fleet.scrape()
    errors = Counter(r.error for r in results if r.error)
    for error, count in errors.most_common(3):
        print(f"    {count} × {error}", flush=True)
    return summarize(results, deltas(before, after))


def fmt(value: object, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


def print_table(workload: str, rate: str, rps: float, rows: list[dict[str, object]]) -> None:
    print(f"\n{workload} at {rate} ({rps:g} req/s)", flush=True)
    print(
        f"{'target':<12} {'policy':<18} | {'TTFT p50':>9} {'p90':>8} {'p99':>8} | {'e2e p50':>8} {'p99':>8} ms | "
        f"{'out tok/s':>9} | {'hits':>5} | {'spread':>6} | {'reqs':>5} {'errs':>4}"
    )
    for r in rows:
        hits = "-" if r["prefix_hit_rate"] is None else f"{r['prefix_hit_rate']:.0%}"
        print(
            f"{r['target']:<12} {r['policy']:<18} | {fmt(r['ttft_p50_ms'], '9.0f')} {fmt(r['ttft_p90_ms'], '8.0f')} "
            f"{fmt(r['ttft_p99_ms'], '8.0f')} | {fmt(r['e2e_p50_ms'], '8.0f')} {fmt(r['e2e_p99_ms'], '8.0f')} ms | "
            f"{fmt(r['output_tokens_per_s'], '9.0f')} | {hits:>5} | {fmt(r['load_spread'], '6.2f')} | "
            f"{r['requests']:>5} {r['errors']:>4}",
            flush=True,
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="about 15 minutes: 4 replicas at time scale 2.5, the heavy rate (agentic: light), 12 s of arrivals, "
        "4 targets",
    )
    parser.add_argument("--replicas", type=int, help="simulated vLLM replicas (default 8)")
    parser.add_argument("--workloads", default=",".join(workloads.GENERATORS))
    parser.add_argument(
        "--rates", help="light,heavy,overload (default) or fractions of capacity; agentic=light: for one workload"
    )
    parser.add_argument("--targets", help="e.g. iir,vllm-router:kv_aware,smg,random (default: every policy of each)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--time-scale", type=float, help="the engine's time runs this much slower (default 10)")
    parser.add_argument("--stream-interval", type=int, default=8, help="tokens per streamed chunk (vLLM's)")
    parser.add_argument("--duration", type=float, help="seconds over which sessions arrive (default 60)")
    parser.add_argument("--cutoff", type=float, help="no turn starts after duration × this (default 2)")
    parser.add_argument("--timeout", type=float, default=1800, help="longest a request may take, seconds")
    parser.add_argument("--bursty", action="store_true", help="bursty arrivals instead of Poisson")
    parser.add_argument("--gateways", type=int, default=1, help="IIR gateway processes (sharing the index)")
    parser.add_argument("--workers", type=int, default=1, help="workers per IIR gateway process")
    parser.add_argument("--out", type=Path, help="the JSON file (default bench/results/fleet-<timestamp>.json)")
    args = parser.parse_args()
    defaults = QUICK if args.quick else FULL
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def rate_fraction(rate: str) -> float:
    return RATES[rate] if rate in RATES else float(rate)


def rates_of(spec: str, workload: str) -> list[str]:
    """The rates `spec` names for `workload`: `light,heavy` for every workload, `agentic=light` for one
    (which then takes only the rates named for it)."""
    items = [i.strip() for i in spec.split(",") if i.strip()]
    own = [i.partition("=")[2] for i in items if i.partition("=")[0] == workload and "=" in i]
    return own or [i for i in items if "=" not in i]


def main() -> None:
    args = parse_args()
    choices = parse_choices(args.targets)
    tokenizer = build_tokenizer()
    options = FleetOptions(
        args.replicas, tokenizer=tokenizer, time_scale=args.time_scale, stream_interval=args.stream_interval
    )
    rows: list[dict[str, object]] = []
    work_dir = Path(tempfile.mkdtemp(prefix="fleet-"))
    started_at = time.strftime("%Y%m%d-%H%M%S")
    print(
        f"fleet: {args.replicas} replicas, engine model {'on' if engine_model() else 'off (fixed delays)'}, "
        f"time scale {args.time_scale:g}, stream interval {args.stream_interval}, seed {args.seed}, "
        f"{os.cpu_count()} CPUs, IIR gateways {args.gateways} × {args.workers} workers; logs in {work_dir}",
        flush=True,
    )
    with running_fleet(options, work_dir) as fleet, contextlib.ExitStack() as stack:
        skipped = {c: why for c in choices if (why := available(c, fleet))}
        for c, why in skipped.items():
            print(f"skipping {c.target}:{c.policy}: {why}", flush=True)
        runnable = [c for c in choices if c not in skipped]
        iir = stack.enter_context(iir_services(fleet)) if any(c.target == "iir" for c in runnable) else None
        for name in args.workloads.split(","):
            for rate in rates_of(args.rates, name):
                rps = workloads.scaled_rate(name, args.seed, rate_fraction(rate), args.replicas, args.time_scale)
                work = workloads.generate(name, args.seed, rps, args.duration, args.bursty, args.time_scale)
                table = []
                for choice in runnable:
                    began = time.monotonic()
                    figures = run_one(choice, fleet, iir, work, args)
                    print(
                        f"  {name} {rate} {choice.target}:{choice.policy}: {time.monotonic() - began:.0f} s", flush=True
                    )
                    row = {"workload": name, "rate": rate, "target": choice.target, "policy": choice.policy, **figures}
                    table.append(row)
                print_table(name, rate, rps, table)
                rows += table
                RESULTS.mkdir(exist_ok=True)
                out = args.out or RESULTS / f"fleet-{started_at}.json"
                out.write_text(json.dumps(rows, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
