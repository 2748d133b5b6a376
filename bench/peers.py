"""The peers IIR is measured against, each started in front of the same backend: vllm-router (Rust) and
LiteLLM proxy, from the benchmark venv `make bench-tools` builds (`.cache/bench-venv`), and the CPU and
memory of a process tree read from /proc."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from iir_dev.datastores import free_port
from iir_dev.stack import REPO

BENCH_VENV = Path(os.environ.get("IIR_BENCH_VENV", REPO / ".cache" / "bench-venv"))
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Peer:
    name: str
    url: str  # base URL (…/v1/chat/completions is appended)
    pid: int
    key: str = ""


def tree(pid: int) -> list[int]:
    """`pid` and every descendant."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rpartition(")")[2].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process tree under `pid` (its live processes)."""
    total = 0
    for p in tree(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


def rss_mib(pid: int) -> float:
    total = 0
    for p in tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def _wait(url: str, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{log.stem} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code < 500:
                return
        time.sleep(0.3)
    raise RuntimeError(f"{log.stem} did not start within {timeout:.0f}s: {log.read_text()[-2000:]}")


PEERS = ("vllm-router", "litellm")
FLOORS = ("floor-asgi", "floor-raw")  # bench/python_floor.py: a Python proxy doing nothing but forwarding


@contextlib.contextmanager
def start_peers(backend: str, model: str, workdir: Path, names: tuple[str, ...] = PEERS) -> Iterator[list[Peer]]:
    """vllm-router and LiteLLM proxy (those of `names`) in front of `backend` (base URL), if the benchmark
    venv has them."""
    procs: list[subprocess.Popen[bytes]] = []
    peers: list[Peer] = []
    try:
        router = BENCH_VENV / "bin" / "vllm-router"
        if router.exists() and "vllm-router" in names:
            port = free_port()
            log = workdir / "vllm-router.log"
            cmd = [str(router), "--host", "127.0.0.1", "--port", str(port), "--worker-urls", backend]
            cmd += ["--policy", "round_robin", "--log-level", "warning"]
            proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT)
            procs.append(proc)
            _wait(f"http://127.0.0.1:{port}/health", proc, 60, log)
            peers.append(Peer("vllm-router", f"http://127.0.0.1:{port}", proc.pid))
        litellm = BENCH_VENV / "bin" / "litellm"
        if litellm.exists() and "litellm" in names:
            port = free_port()
            config = workdir / "litellm.yaml"
            config.write_text(
                "model_list:\n"
                f"  - model_name: {model}\n"
                "    litellm_params:\n"
                f"      model: openai/{model}\n"
                f"      api_base: {backend}/v1\n"
                "      api_key: none\n"
            )
            log = workdir / "litellm.log"
            key = "sk-bench-master"
            env = {**os.environ, "LITELLM_MASTER_KEY": key, "LITELLM_LOG": "ERROR", "DISABLE_ADMIN_UI": "True"}
            env |= {"HF_HUB_OFFLINE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}  # no network: it would wait on it
            cmd = [str(litellm), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
            cmd += ["--num_workers", "1"]
            proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
            procs.append(proc)
            _wait(f"http://127.0.0.1:{port}/health/liveliness", proc, 180, log)
            peers.append(Peer("litellm", f"http://127.0.0.1:{port}", proc.pid, key))
        for name in FLOORS:
            if name not in names:
                continue
            port = free_port()
            log = workdir / f"{name}.log"
            script = Path(__file__).resolve().parent / "python_floor.py"
            cmd = [sys.executable, str(script), name.removeprefix("floor-"), str(port), backend]
            proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT)
            procs.append(proc)
            _wait(f"http://127.0.0.1:{port}/health", proc, 30, log)
            peers.append(Peer(name, f"http://127.0.0.1:{port}", proc.pid))
        yield peers
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
