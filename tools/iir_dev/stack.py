"""Starts the IIR services as separate processes on localhost and waits until each answers."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from iir_dev import datastores
from iir_dev.datastores import free_port

REPO = Path(__file__).resolve().parents[2]
DEV_MODELS = REPO / "deploy" / "dev" / "models.yaml"


class StackError(RuntimeError):
    pass


@dataclass
class Ports:
    gateway: int
    auth: int
    registry: int
    classifier: int
    sim: int
    metrics: int

    @classmethod
    def random(cls) -> Ports:
        return cls(*(free_port() for _ in range(6)))

    @classmethod
    def defaults(cls) -> Ports:
        env = os.environ
        return cls(
            int(env.get("IIR_GATEWAY_PORT", 8080)),
            int(env.get("IIR_AUTH_PORT", 50051)),
            int(env.get("IIR_REGISTRY_PORT", 50052)),
            int(env.get("IIR_CLASSIFIER_PORT", 50053)),
            int(env.get("IIR_SIM_PORT", 8100)),
            int(env.get("IIR_METRICS_PORT", 9464)),
        )


def write_models_file(path: Path, sim_url: str, replicas: int = 1) -> list[str]:
    """The dev models file with every endpoint pointed at the simulated backend (`replicas` of them, on
    consecutive ports, as `python -m iir_simbackend --replicas` serves them); returns the served names."""
    docs = [d for d in yaml.safe_load_all(DEV_MODELS.read_text()) if d]
    base, _, port = sim_url.rpartition(":")
    for doc in docs:
        status = doc.get("status") or {}
        for endpoint in status.get("endpoints") or []:
            endpoint["url"] = sim_url
        if replicas > 1 and status.get("endpoints"):
            template = status["endpoints"][0]
            status["endpoints"] = [{**template, "url": f"{base}:{int(port) + i}"} for i in range(replicas)]
            status["replicas"] = status["readyReplicas"] = replicas
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return [d["spec"]["servedName"] for d in docs]


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    def log_tail(self, lines: int = 30) -> str:
        self.log_file.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


# Addresses and stores the stack chooses itself; other IIR_ settings may come from the caller.
MANAGED_VARIABLES = frozenset(
    {
        "IIR_DATABASE_URL",
        "IIR_REDIS_URL",
        "IIR_GATEWAY_PORT",
        "IIR_AUTH_PORT",
        "IIR_REGISTRY_PORT",
        "IIR_CLASSIFIER_PORT",
        "IIR_SIM_PORT",
        "IIR_AUTH_ADDR",
        "IIR_REGISTRY_ADDR",
        "IIR_CLASSIFIER_ADDR",
        "IIR_MODELS_FILE",
        "IIR_METRICS_PORT",
    }
)


def dev_settings() -> dict[str, str]:
    """What `make dev` sets besides the addresses. Conveniences of a laptop, off in a cluster: key management
    from this machine without a key, and /docs; the dev routing file; and a simulated vLLM that serves
    whatever the models file names (edits included), and one embedding model."""
    return {
        "IIR_ROUTING_FILE": str(REPO / "deploy" / "dev" / "routing.yaml"),
        "IIR_TRUSTED_NETWORKS": "127.0.0.0/8,::1/128",
        "IIR_DOCS_ENABLED": "true",
        "IIR_SIM_MODELS": "*",
        "IIR_SIM_EMBEDDING_MODELS": "e5-small-v2",
    }


@dataclass
class Stack:
    """gateway, auth, registry, classifier and a simulated vLLM, each its own process."""

    workdir: Path
    database_url: str
    redis_url: str
    ports: Ports = field(default_factory=Ports.random)
    master_key: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, Process] = field(default_factory=dict)
    # Gateway replica URL → its metrics URL.
    replica_metrics: dict[str, str] = field(default_factory=dict)
    # Simulated vLLM replicas (one process, consecutive ports) behind every dev model.
    sim_replicas: int = 1

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.gateway}"

    @property
    def metrics_url(self) -> str:
        """The gateway's Prometheus endpoint (its own port, not the public one)."""
        return f"http://127.0.0.1:{self.ports.metrics}/metrics"

    @property
    def sim_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.sim}"

    @property
    def models_file(self) -> Path:
        return self.workdir / "models.yaml"

    def _env(self) -> dict[str, str]:
        p = self.ports
        env = {k: v for k, v in os.environ.items() if not k.startswith("IIR_")}
        env.update(
            {
                "IIR_DATABASE_URL": self.database_url,
                "IIR_REDIS_URL": self.redis_url,
                "IIR_GATEWAY_PORT": str(p.gateway),
                "IIR_AUTH_PORT": str(p.auth),
                "IIR_REGISTRY_PORT": str(p.registry),
                "IIR_CLASSIFIER_PORT": str(p.classifier),
                "IIR_SIM_PORT": str(p.sim),
                "IIR_AUTH_ADDR": f"127.0.0.1:{p.auth}",
                "IIR_REGISTRY_ADDR": f"127.0.0.1:{p.registry}",
                "IIR_CLASSIFIER_ADDR": f"127.0.0.1:{p.classifier}",
                "IIR_MODELS_FILE": str(self.models_file),
                "IIR_METRICS_PORT": str(p.metrics),
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.master_key:
            env["IIR_MASTER_KEY"] = self.master_key
        env.update(self.env)
        return env

    def _spawn(self, name: str, module: str, env: dict[str, str] | None = None) -> None:
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{name}.log"
        log_file = log_path.open("ab")
        popen = subprocess.Popen(
            [sys.executable, "-m", module],
            env={**self._env(), **(env or {})},
            cwd=REPO,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        self.processes[name] = Process(name, popen, log_path, log_file)

    def _wait(self, name: str, ready: object, timeout: float) -> None:
        proc = self.processes[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise StackError(f"{name} exited with code {proc.popen.returncode}:\n{proc.log_tail()}")
            if ready():  # type: ignore[operator]
                return
            time.sleep(0.1)
        raise StackError(f"{name} not ready after {timeout:.0f}s:\n{proc.log_tail()}")

    def start(self, timeout: float = 60) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        sim_env = {}
        if not self.models_file.exists():  # a file that exists is the user's (or a test's): kept as it is
            names = write_models_file(self.models_file, self.sim_url, self.sim_replicas)
            sim_env["IIR_SIM_MODELS"] = self.env.get("IIR_SIM_MODELS") or ",".join(names)
            sim_env["IIR_SIM_REPLICAS"] = str(self.sim_replicas)
        p = self.ports
        grpc_services = {
            "auth": ("iir_auth", p.auth, "iir.v1.AuthService"),
            "registry": ("iir_registry", p.registry, "iir.v1.RegistryService"),
            "classifier": ("iir_classifier", p.classifier, "iir.v1.ClassifierService"),
        }
        try:
            self._spawn("simbackend", "iir_simbackend", sim_env)
            for name, (module, _, _) in grpc_services.items():
                self._spawn(name, module)
            self._wait("simbackend", lambda: http_ok(f"{self.sim_url}/health"), timeout)
            for name, (_, port, service) in grpc_services.items():
                self._wait(name, lambda port=port, service=service: grpc_serving(port, service), timeout)
            self._spawn("gateway", "iir_gateway")
            self._wait("gateway", lambda: http_ok(f"{self.gateway_url}/health"), timeout)
        except BaseException:
            self.stop()
            raise

    def start_gateway_replica(
        self, name: str, timeout: float = 30, env: dict[str, str] | None = None, port: int = 0
    ) -> str:
        """Another gateway process sharing this stack's services and Redis (plus `env`), on `port` (0: a free
        one); returns its URL."""
        port, metrics = port or free_port(), free_port()
        self._spawn(
            name, "iir_gateway", {"IIR_GATEWAY_PORT": str(port), "IIR_METRICS_PORT": str(metrics), **(env or {})}
        )
        url = f"http://127.0.0.1:{port}"
        self.replica_metrics[url] = f"http://127.0.0.1:{metrics}/metrics"
        self._wait(name, lambda: http_ok(f"{url}/health/live"), timeout)
        return url

    def stop(self) -> None:
        for proc in self.processes.values():
            if proc.popen.poll() is None:
                proc.popen.terminate()
        for proc in self.processes.values():
            try:
                proc.popen.wait(10)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
            proc.log_file.close()
        self.processes.clear()

    def create_key(self, name: str, *, admin: bool = False, allowed_models: list[str] | None = None) -> str:
        """A new API key from the auth service (its secret)."""
        from iir.v1 import auth_pb2, auth_pb2_grpc

        with grpc.insecure_channel(f"127.0.0.1:{self.ports.auth}") as channel:
            reply = auth_pb2_grpc.AuthServiceStub(channel).CreateKey(
                auth_pb2.CreateKeyRequest(name=name, admin=admin, allowed_models=allowed_models or []), timeout=10
            )
        return str(reply.key)


@contextlib.contextmanager
def throwaway_stack(prefix: str, database: str, **stack_options: Any) -> Iterator[Stack]:
    """A started stack in a fresh temporary folder, with PostgreSQL and Redis as `datastores` finds them
    (the local servers, else throwaway ones); stopped with them on exit. For benchmarks."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    pg = datastores.postgres(work, database=database)
    rd = datastores.redis(work)
    stack = Stack(workdir=work, database_url=pg.url, redis_url=rd.url, **stack_options)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        pg.stop()
        rd.stop()


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def grpc_serving(port: int, service: str) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
