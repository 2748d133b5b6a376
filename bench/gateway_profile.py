"""Where the gateway's CPU goes: py-spy samples the gateway worker while wrk loads it (non-streaming
or streaming chat completions through the default pipeline), and the hottest frames are printed, by
their own time and with what they call. py-spy comes from `make bench-tools`.
Usage: .venv/bin/python bench/gateway_profile.py [--stream] [--tokens 16] [--duration 10] [--connections 32] [--top 25]
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import threading
from pathlib import Path

from gateway_overhead import MODEL, RESULTS, body, wrk
from peers import BENCH_VENV, tree

from iir_dev.stack import throwaway_stack


def top_frames(collapsed: Path, top: int) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """(own time, total time) per frame, as shares of the samples, from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        samples += n
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    return (
        [(f, n / samples) for f, n in own.most_common(top)],
        [(f, n / samples) for f, n in total.most_common(top)],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--tokens", type=int, default=16, help="answer length in tokens")
    args = parser.parse_args()
    spy = BENCH_VENV / "bin" / "py-spy"
    if not spy.exists():
        raise SystemExit("py-spy is not installed: run `make bench-tools`")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"gateway_profile_{'stream' if args.stream else 'unary'}_t{args.tokens}.txt"
    with throwaway_stack("iir-profile-", "iir_profile") as stack:
        key = stack.create_key("profile")
        pids = tree(stack.processes["gateway"].popen.pid)
        worker = pids[-1]  # the serving process (the last descendant when there are workers)
        load = threading.Thread(
            target=wrk,
            args=(
                f"{stack.gateway_url}/v1/chat/completions",
                key,
                body(args.stream, f"local/{MODEL}", args.tokens),
                args.connections,
                args.duration + 2,
                stack.workdir,
            ),
        )
        load.start()
        record = ["record", "--pid", str(worker), "--duration", str(args.duration), "--rate", "250"]
        subprocess.run(
            [str(spy), *record, "--format", "raw", "--output", str(out), "--nonblocking"],
            check=True,
            capture_output=True,
        )
        load.join()
    own, total = top_frames(out, args.top)
    print(f"{'own %':>6}  frame")
    for frame, share in own:
        print(f"{share:6.1%}  {frame}")
    print(f"\n{'total %':>7}  frame")
    for frame, share in total:
        print(f"{share:7.1%}  {frame}")
    print(f"collapsed stacks: {out}")


if __name__ == "__main__":
    main()
