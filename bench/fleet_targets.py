"""The routers measured in front of the fleet, each started on its own ports and stopped after its runs:
IIR (one gateway process group per endpoint-picking policy, sharing one registry, auth service, Redis
database and PostgreSQL database), vllm-router and SMG from the benchmark venv (`make bench-tools`), and
`random`, a stand-in for a plain Kubernetes Service (`fleet_random_proxy.py`)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml
from fleet_load import Endpoint
from fleet_replicas import HASH_ALGO, HASH_SEED, Fleet

from iir_dev import datastores
from iir_dev.datastores import free_port
from iir_dev.stack import Stack
from iir_gateway.picking.policies import POLICIES as IIR_POLICIES
from iir_gateway.settings import GatewaySettings

PREFILL_TOKENS_PER_S = 20_000.0  # the simulator's Llama-3.1-8B-on-H100 profile, 2-8k-token chunks
BENCH_VENV = Path(os.environ.get("IIR_BENCH_VENV", Path(__file__).resolve().parents[1] / ".cache" / "bench-venv"))
IIR_DEFAULT = str(GatewaySettings.model_fields["endpoint_picker"].default)
PEER_POLICIES = {
    "vllm-router": ("round_robin", "power_of_two", "cache_aware", "kv_aware"),
    "smg": ("cache_aware",),
    "random": ("random",),
}
FLEET_REDIS_DB = 12  # its own database on a local Redis, away from `make dev` (0) and the tests (15)
# What the benchmark changes in IIR's defaults, all outside picking: the loopback client may hold more than
# 100 connections, a prefill queued behind an overload may take more than 60 s (the peers wait 30 min),
# nothing is logged per request (as the peers at their warning level), and the answer cache, which no
# request of these workloads could hit, is off.
IIR_ENV = {
    "IIR_MAX_CONNECTIONS_PER_CLIENT": "100000",
    "IIR_UPSTREAM_FIRST_TOKEN_TIMEOUT_S": "1800",
    "IIR_UPSTREAM_READ_TIMEOUT_S": "1800",
    "IIR_ACCESS_LOG": "false",
    "IIR_CACHE_ENABLED": "false",
}


@dataclass(frozen=True)
class Choice:
    target: str  # iir, vllm-router, smg, random
    policy: str


def all_choices() -> list[Choice]:
    """IIR's default policy first, then its others, then the peers'."""
    iir = [IIR_DEFAULT, *(p for p in IIR_POLICIES if p != IIR_DEFAULT)]
    return [Choice("iir", p) for p in iir] + [Choice(t, p) for t, ps in PEER_POLICIES.items() for p in ps]


def parse_choices(spec: str) -> list[Choice]:
    """`iir,vllm-router:kv_aware,smg`: a target alone means each of its policies; `iir:default` is IIR's
    default policy."""
    known = all_choices()
    out: list[Choice] = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        target, _, policy = item.partition(":")
        policy = IIR_DEFAULT if (target, policy) == ("iir", "default") else policy
        picked = [c for c in known if c.target == target and policy in ("", c.policy)]
        if not picked:
            raise SystemExit(f"unknown target {item!r}; known: {', '.join(f'{c.target}:{c.policy}' for c in known)}")
        out += [c for c in picked if c not in out]
    return out


@dataclass
class Started:
    endpoint: Endpoint
    pids: list[int] = field(default_factory=list)


def _wait(url: str, procs: list[subprocess.Popen[bytes]], log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{log.name}: exited with {proc.returncode}: {log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{log.name}: not ready after {timeout_s:.0f}s: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def _process(cmd: list[str], log: Path, health: str, env: dict[str, str] | None = None) -> Iterator[int]:
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    try:
        _wait(health, [proc], log)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def vllm_router_command(fleet: Fleet, policy: str, port: int) -> list[str]:
    cmd = [str(BENCH_VENV / "bin" / "vllm-router"), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--worker-urls", *fleet.urls, "--policy", policy, "--log-level", "warning"]
    cmd += ["--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port())]
    if policy == "kv_aware":
        for url, events in zip(fleet.urls, fleet.kv_events, strict=True):
            cmd += ["--kv-event-source", f"{url}={events}"]
        for url, replay in zip(fleet.urls, fleet.kv_replay, strict=True):
            cmd += ["--kv-event-replay-source", f"{url}={replay}"]
        cmd += ["--kv-event-block-size", "16", "--kv-event-model", fleet.options.model]
    return cmd


def smg_command(fleet: Fleet, policy: str, port: int) -> list[str]:
    cmd = [str(BENCH_VENV / "bin" / "smg"), "launch", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--worker-urls", *fleet.urls, "--policy", policy, "--log-level", "warn"]
    return [*cmd, "--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port())]


def available(choice: Choice, fleet: Fleet) -> str | None:
    """Why `choice` cannot run here, or None."""
    if choice.target in ("vllm-router", "smg") and not (BENCH_VENV / "bin" / choice.target).exists():
        return f"{BENCH_VENV}/bin/{choice.target} is missing: run `make bench-tools`"
    if choice.policy == "kv_aware" and not fleet.kv_events:
        return "the fleet publishes no KV events (the simulator has no engine model)"
    if choice.policy == "kv_aware" and not serves_render(fleet):
        return "the replicas do not serve /v1/chat/completions/render, where kv_aware gets a prompt's token ids"
    return None


def serves_render(fleet: Fleet) -> bool:
    """Whether the replicas answer vLLM's render API (vllm-router's kv_aware tokenizes through it)."""
    body = {"model": fleet.options.model, "messages": [{"role": "user", "content": "hello"}]}
    with contextlib.suppress(httpx.HTTPError):
        return httpx.post(f"{fleet.urls[0]}/v1/chat/completions/render", json=body, timeout=5).status_code == 200
    return False


@contextlib.contextmanager
def start_peer(choice: Choice, fleet: Fleet, workdir: Path) -> Iterator[Started]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = workdir / f"{choice.target}-{choice.policy}.log"
    env = None
    if choice.target == "vllm-router":
        cmd = vllm_router_command(fleet, choice.policy, port)
        if fleet.options.tokenizer is not None:  # kv_aware tokenizes prompts as the engine does
            env = {**os.environ, "VLLM_ROUTER_TOKENIZER": str(fleet.options.tokenizer)}
    elif choice.target == "smg":
        cmd = smg_command(fleet, choice.policy, port)
    else:
        cmd = [sys.executable, str(Path(__file__).with_name("fleet_random_proxy.py")), str(port), *fleet.urls]
    with _process(cmd, log, f"{url}/health", env) as pid:
        yield Started(Endpoint((url,), fleet.options.model), [pid])


def models_file(fleet: Fleet) -> str:
    """The fleet as one InferenceModel for the registry's file source: every replica a ready endpoint with
    its KV event sockets, and how the engines hash blocks (tokenizer, algorithm, seed) when they publish."""
    endpoints: list[dict[str, object]] = []
    for i, url in enumerate(fleet.urls):
        endpoint: dict[str, object] = {"url": url, "ready": True, "target": "simbackend"}
        if fleet.kv_events:
            endpoint |= {"kvEvents": fleet.kv_events[i], "kvEventsReplay": fleet.kv_replay[i]}
        endpoints.append(endpoint)
    n = len(endpoints)
    spec: dict[str, object] = {
        "servedName": fleet.options.model,
        "source": {"huggingFace": {"id": "HuggingFaceTB/SmolLM2-135M-Instruct"}},
        "replicas": n,
        "routing": {"kvEvents": bool(fleet.kv_events), "hashSeed": HASH_SEED},
        "vllm": {"extraArgs": ["--prefix-caching-hash-algo", HASH_ALGO]},
    }
    if fleet.options.tokenizer is not None:  # a folder under the gateway's IIR_TOKENIZERS_DIR
        spec["tokenizer"] = fleet.options.tokenizer.name
    doc = {
        "apiVersion": "iir.dev/v1alpha1",
        "kind": "InferenceModel",
        "metadata": {"name": fleet.options.model, "namespace": "default"},
        "spec": spec,
        "status": {"phase": "Ready", "replicas": n, "readyReplicas": n, "endpoints": endpoints},
    }
    return yaml.safe_dump(doc, sort_keys=False)


@dataclass
class IirServices:
    """Registry and auth (the stack's own gateway idles) in front of the fleet, with one key."""

    stack: Stack
    key: str


@contextlib.contextmanager
def iir_services(fleet: Fleet) -> Iterator[IirServices]:
    work = Path(tempfile.mkdtemp(prefix="iir-fleet-"))
    (work / "models.yaml").write_text(models_file(fleet))  # kept: the stack writes none of its own
    # A database and a Redis key prefix of this run's own: two runs at once share nothing.
    database = f"iir_fleet_{os.getpid()}"
    pg = datastores.postgres(work, database=database)
    rd = datastores.redis(work, db=FLEET_REDIS_DB)
    env = {**IIR_ENV, "IIR_REDIS_PREFIX": f"iir-fleet-{os.getpid()}:"}
    if fleet.options.tokenizer is not None:
        env["IIR_TOKENIZERS_DIR"] = str(fleet.options.tokenizer.parent)
    stack = Stack(workdir=work, database_url=pg.url, redis_url=rd.url, env=env)
    try:
        stack.start()
        yield IirServices(stack, stack.create_key("fleet"))
    finally:
        stack.stop()
        if pg.origin == "local":
            with contextlib.suppress(Exception):
                datastores.drop_database(datastores.with_database(pg.url, "postgres"), database)
        pg.stop()
        rd.stop()


@contextlib.contextmanager
def start_iir(services: IirServices, fleet: Fleet, policy: str, gateways: int, workers: int) -> Iterator[Started]:
    """`gateways` gateway processes (each with `workers` workers) picking with `policy`."""
    stack = services.stack
    env = {
        "IIR_ENDPOINT_PICKER": policy,
        "IIR_GATEWAY_WORKERS": str(workers),
        # The engines' prefill speed, as an operator sets it for its GPUs: the profile's, slowed by the scale.
        "IIR_PICKER_PREFILL_TOKENS_PER_S": str(PREFILL_TOKENS_PER_S / fleet.options.time_scale),
    }
    names = [f"gateway-{policy}-{i}" for i in range(gateways)]
    try:
        urls = tuple(stack.start_gateway_replica(name, timeout=60, env=env) for name in names)
        # The catalogue reaches a new gateway over the registry's Watch stream: wait until it routes.
        for url in urls:
            _wait_model(url, services.key, f"local/{fleet.options.model}")
        pids = [stack.processes[name].popen.pid for name in names]
        yield Started(Endpoint(urls, f"local/{fleet.options.model}", services.key), pids)
    finally:
        for name in names:
            proc = stack.processes.pop(name, None)
            if proc is not None:
                proc.popen.terminate()
                try:
                    proc.popen.wait(15)
                except subprocess.TimeoutExpired:
                    proc.popen.kill()
                proc.log_file.close()


def _wait_model(url: str, key: str, model: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    headers = {"Authorization": f"Bearer {key}"}
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            models = httpx.get(f"{url}/v1/models", headers=headers, timeout=2).json().get("data") or []
            if any(m.get("id") == model for m in models):
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} does not list {model} after {timeout_s:.0f}s")
