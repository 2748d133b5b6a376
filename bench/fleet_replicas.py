"""The simulated fleet: N vLLM replicas of one model on loopback, their caches reset between runs and their
own counters read before and after each.

With the simulator's engine model (a calibrated profile, `IIR_SIM_ENGINE`) one process serves every replica
(`--replicas N --base-port P --kv-events-base-port Q`), each publishing KV events as vLLM does (PUB on
Q+2i, replay on Q+2i+1) and hashing blocks with sha256_cbor and PYTHONHASHSEED 0; without it (`engine=""`),
one process per replica with a fixed time to first token and decode speed, no prefix cache and no events.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from iir_dev.datastores import free_port
from iir_dev.stack import REPO
from iir_simbackend.settings import SimSettings

MAX_MODEL_LEN = 131_072  # agentic contexts reach 60k tokens
COUNTERS = {
    "vllm:prefix_cache_queries": "queries",
    "vllm:prefix_cache_hits": "hits",
    "vllm:request_success": "requests",
    "vllm:generation_tokens": "output_tokens",
    "vllm:prompt_tokens": "prompt_tokens",
}
GAUGES = {"vllm:num_requests_running": "running", "vllm:num_requests_waiting": "waiting"}


HASH_ALGO, HASH_SEED = "sha256_cbor", "0"


class PortTaken(RuntimeError):
    """A replica could not bind its port."""


def engine_model() -> bool:
    """Whether this checkout's simulator has the engine model (continuous batching, prefix cache, events)."""
    return "engine" in SimSettings.model_fields


@dataclass(frozen=True)
class FleetOptions:
    replicas: int = 8
    model: str = "fleet-model"
    engine: str = "llama-3.1-8b-h100"  # the simulator's profile; "" for fixed delays
    tokenizer: Path | None = None
    time_scale: float = 1.0
    stream_interval: int = 1
    # Without the engine model: what every replica does (a stand-in that only shows the harness works).
    ttft_ms: float = 40.0
    tokens_per_s: float = 100.0


@dataclass
class Fleet:
    options: FleetOptions
    workdir: Path
    urls: list[str] = field(default_factory=list)
    kv_events: list[str] = field(default_factory=list)  # tcp://… per replica, when they publish
    kv_replay: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10))

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    @property
    def engine(self) -> bool:
        return bool(self.options.engine) and engine_model()

    def _env(self) -> dict[str, str]:
        o = self.options
        env = {k: v for k, v in os.environ.items() if not k.startswith("IIR_")}
        env |= {
            "IIR_SIM_MODELS": o.model,
            "IIR_SIM_MAX_MODEL_LEN": str(MAX_MODEL_LEN),
            "IIR_SIM_ENGINE": o.engine,
            "IIR_SIM_TIME_SCALE": str(o.time_scale),
            "IIR_SIM_STREAM_INTERVAL": str(o.stream_interval),
            "IIR_SIM_PREFIX_CACHING_HASH_ALGO": HASH_ALGO,
            "IIR_SIM_HASH_SEED": HASH_SEED,
            "PYTHONUNBUFFERED": "1",
        }
        if o.tokenizer is not None:
            env["IIR_SIM_TOKENIZER"] = str(o.tokenizer)
        return env

    def _spawn(self, args: list[str], env: dict[str, str], log_name: str) -> None:
        log = (self.workdir / f"{log_name}.log").open("wb")
        cmd = [sys.executable, "-m", "iir_simbackend", *args]
        self.procs.append(subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT))

    def start(self, timeout_s: float = 60, attempts: int = 3) -> None:
        """Starts the replicas and waits until each answers; ports taken meanwhile by another process
        (they are chosen before the fleet binds them) mean another try on other ports."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for attempt in range(attempts):
            try:
                self._start(timeout_s)
                return
            except PortTaken:
                self._stop_processes()
                self.urls, self.kv_events, self.kv_replay, self.procs = [], [], [], []
                if attempt == attempts - 1:
                    raise

    def _start(self, timeout_s: float) -> None:
        n = self.options.replicas
        if self.engine:
            base = free_range(3 * n)  # HTTP ports, then each replica's PUB and replay sockets
            events = base + n
            self.urls = [f"http://127.0.0.1:{base + i}" for i in range(n)]
            self.kv_events = [f"tcp://127.0.0.1:{events + 2 * i}" for i in range(n)]
            self.kv_replay = [f"tcp://127.0.0.1:{events + 2 * i + 1}" for i in range(n)]
            args = ["--replicas", str(n), "--base-port", str(base), "--kv-events-base-port", str(events)]
            self._spawn(args, self._env(), "fleet")
        else:
            stand_in = {"IIR_SIM_TTFT_MS": str(self.options.ttft_ms * self.options.time_scale)}
            stand_in["IIR_SIM_TOKENS_PER_S"] = str(self.options.tokens_per_s / self.options.time_scale)
            for i in range(n):
                port = free_port()
                self.urls.append(f"http://127.0.0.1:{port}")
                self._spawn([], {**self._env(), **stand_in, "IIR_SIM_PORT": str(port)}, f"replica-{i}")
        self._wait_healthy(timeout_s)

    def _wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        pending = list(self.urls)
        while pending:
            for proc in self.procs:
                if proc.poll() is not None:
                    logs = "".join(f.read_text(errors="replace") for f in self.workdir.glob("*.log"))
                    error = PortTaken if "address already in use" in logs else RuntimeError
                    raise error(f"a fleet process exited with {proc.returncode}; logs in {self.workdir}")
            with contextlib.suppress(httpx.HTTPError):
                if self.http.get(f"{pending[0]}/health").status_code == 200:
                    pending.pop(0)
                    continue
            if time.monotonic() > deadline:
                raise RuntimeError(f"{pending[0]} not healthy after {timeout_s:.0f}s; logs in {self.workdir}")
            time.sleep(0.1)

    def stop(self) -> None:
        self._stop_processes()
        self.http.close()

    def _stop_processes(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()

    def scrape(self) -> list[dict[str, float]]:
        """Each replica's counters and gauges (COUNTERS, GAUGES), summed over their label sets."""
        out = []
        for url in self.urls:
            values: dict[str, float] = dict.fromkeys([*COUNTERS.values(), *GAUGES.values()], 0.0)
            text = self.http.get(f"{url}/metrics").text
            for family in text_string_to_metric_families(text):
                name = COUNTERS.get(family.name) or GAUGES.get(family.name)
                if name is None:
                    continue
                suffix = "_total" if family.name in COUNTERS else ""
                values[name] += sum(s.value for s in family.samples if s.name == family.name + suffix)
            out.append(values)
        return out

    def reset(self, timeout_s: float = 120) -> None:
        """Waits until no replica runs or queues a request, then empties every prefix cache (as vLLM's
        `POST /reset_prefix_cache`; a simulator without a cache has none to empty)."""
        deadline = time.monotonic() + timeout_s
        while any(r["running"] or r["waiting"] for r in self.scrape()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the fleet is still busy after {timeout_s:.0f}s")
            time.sleep(0.2)
        for url in self.urls:
            status = self.http.post(f"{url}/reset_prefix_cache").status_code
            if status not in (200, 404):
                raise RuntimeError(f"{url}/reset_prefix_cache answered {status}")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_range(n: int, attempts: int = 50) -> int:
    """A port P such that P..P+n-1 can all be bound on loopback now."""
    for _ in range(attempts):
        base = free_port()
        if base + n < 65535 and all(_bindable(base + i) for i in range(n)):
            return base
    raise RuntimeError(f"no {n} consecutive free ports found")


@contextlib.contextmanager
def running_fleet(options: FleetOptions, workdir: Path) -> Iterator[Fleet]:
    fleet = Fleet(options, workdir)
    try:
        fleet.start()
        yield fleet
    finally:
        fleet.stop()


def deltas(before: list[dict[str, float]], after: list[dict[str, float]]) -> list[dict[str, float]]:
    """Per replica, how much each counter grew."""
    return [{k: a[k] - b[k] for k in COUNTERS.values()} for b, a in zip(before, after, strict=True)]
