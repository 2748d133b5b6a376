"""Shared fixtures: real PostgreSQL and Redis, and the whole stack as real processes on random ports."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from iir_dev import datastores
from iir_dev.stack import REPO, Stack, http_ok
from tests.waiting import unavailable, wait_for

SERVED = "llama-3-8b-instruct"
EMBEDDER = "e5-small"  # an embedding model of the simulated vLLM
MASTER_KEY = "iir-test-master-" + uuid.uuid4().hex
STATIC_KEY = "iir-test-static-" + uuid.uuid4().hex


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh PostgreSQL database: IIR_TEST_DATABASE_URL, else the local server, else a throwaway one."""
    if os.environ.get("IIR_TEST_DATABASE_URL"):
        yield os.environ["IIR_TEST_DATABASE_URL"]
        return
    name = f"iir_test_{uuid.uuid4().hex[:10]}"
    try:
        store = datastores.postgres(tmp_path_factory.mktemp("pg"), database=name, env_var="IIR_TEST_DATABASE_URL")
    except datastores.DatastoreUnavailable as exc:
        unavailable(f"PostgreSQL unavailable, skipping tests that need it: {exc}")
    yield store.url
    datastores.drop_database(datastores.with_database(store.url, "postgres"), name)
    store.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis URL: IIR_TEST_REDIS_URL, else the local server (db 15), else a throwaway one."""
    try:
        store = datastores.redis(tmp_path_factory.mktemp("redis"), env_var="IIR_TEST_REDIS_URL", db=15)
    except datastores.DatastoreUnavailable as exc:
        unavailable(f"Redis unavailable, skipping tests that need it: {exc}")
    yield store.url
    store.stop()


def start_sim(port: int, **env: str) -> subprocess.Popen[bytes]:
    """A simulated vLLM server process (settings as IIR_SIM_* variables)."""
    full_env = {**os.environ, "IIR_SIM_PORT": str(port), **{f"IIR_SIM_{k.upper()}": v for k, v in env.items()}}
    proc = subprocess.Popen(
        [sys.executable, "-m", "iir_simbackend"],
        env=full_env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    host = env.get("host", "127.0.0.1")
    if wait_for(lambda: http_ok(f"http://{host}:{port}/health"), timeout=10, interval=0.1):
        return proc
    proc.kill()
    raise RuntimeError("simulated backend did not start")


def inference_model(
    name: str,
    url: str | None,
    phase: str = "Ready",
    served: str | None = None,
    fallbacks: list[str] | None = None,
    cost: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    endpoints = [{"url": url, "ready": True, "target": name}] if url else []
    routing = (
        {"routing": {k: v for k, v in (("fallbacks", fallbacks), ("cost", cost)) if v}} if fallbacks or cost else {}
    )
    return {
        "apiVersion": "iir.dev/v1alpha1",
        "kind": "InferenceModel",
        "metadata": {"name": name, "namespace": "test"},
        "spec": {"servedName": served or name, "source": {"huggingFace": {"id": f"test/{name}"}}, **routing},
        "status": {
            "phase": phase,
            "readyReplicas": 1 if url else 0,
            "endpoints": endpoints,
            "message": "" if url else "waiting for a GPU node",
        },
    }


# USD per million tokens: dear, so that money budgets in tests trip after a few requests.
SERVED_PRICE = {"inputPerMillion": 100, "outputPerMillion": 200}
SLOW_PRICE = {"inputPerMillion": 1000, "outputPerMillion": 2000}


def write_models(path: Path, docs: list[dict[str, Any]]) -> None:
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


@pytest.fixture(scope="session")
def slow_sim() -> Iterator[str]:
    """A simulated backend decoding 4 tokens a second: slow enough to time out and to cancel."""
    port = datastores.free_port()
    proc = start_sim(port, models=f"{SERVED},slow", tokens_per_s="4")
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


def make_stack(workdir: Path, database_url: str, redis_url: str, slow_url: str, **env: str) -> Stack:
    stack = Stack(
        workdir=workdir,
        database_url=database_url,
        redis_url=redis_url,
        master_key=MASTER_KEY,
        env={
            "IIR_UPSTREAM_READ_TIMEOUT_S": "1.5",
            "IIR_UPSTREAM_TOTAL_TIMEOUT_S": "4",
            "IIR_MAX_BODY_BYTES": "65536",
            # Keys and channels of this stack only: stacks sharing one Redis never meet.
            "IIR_REDIS_PREFIX": f"iir-test-{uuid.uuid4().hex[:8]}:",
            "IIR_MODELS_FILE_POLL_S": "0.2",
            "IIR_KEY_CACHE_TTL_S": "30",
            "IIR_ALLOWED_KEYS": STATIC_KEY,
            "IIR_USAGE_FLUSH_INTERVAL_S": "0.2",
            # As `make dev` runs it (the chart's settings are tested in tests/security/).
            "IIR_TRUSTED_NETWORKS": "127.0.0.0/8,::1/128",
            "IIR_DOCS_ENABLED": "true",
            # Tests stand for clients behind a proxy on loopback, each address its X-Forwarded-For.
            "IIR_TRUSTED_PROXIES": "127.0.0.1",
            "IIR_SIM_EMBEDDING_MODELS": EMBEDDER,
            **env,
        },
    )
    dead = f"http://127.0.0.1:{datastores.free_port()}"
    write_models(
        stack.models_file,
        [
            inference_model(SERVED, stack.sim_url, cost=SERVED_PRICE),
            inference_model("slow", slow_url, cost=SLOW_PRICE),
            inference_model("dead", dead),
            inference_model("dead-with-fallback", dead, fallbacks=[f"local/{SERVED}"]),
            inference_model("ghost", stack.sim_url),  # the simulated backend does not serve "ghost"
            inference_model("pending", None, phase="Pending"),
            inference_model(EMBEDDER, stack.sim_url),
        ],
    )
    stack.start()
    return stack


@pytest.fixture(scope="session")
def stack(
    tmp_path_factory: pytest.TempPathFactory, database_url: str, redis_url: str, slow_sim: str
) -> Iterator[Stack]:
    """gateway, auth, registry, classifier and a simulated vLLM as real processes on random ports."""
    stack = make_stack(tmp_path_factory.mktemp("stack"), database_url, redis_url, slow_sim)
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def api_key(stack: Stack) -> str:
    return stack.create_key("tests")


@pytest.fixture(scope="session")
def openai_client(stack: Stack, api_key: str):  # type: ignore[no-untyped-def]
    import openai

    return openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=api_key, max_retries=0, timeout=20)


@pytest.fixture(scope="session")
def helm() -> str:
    """A helm binary (on PATH, else fetched into .cache/); the chart's tests are skipped (CI: failed) without."""
    from iir_dev.helm import HelmUnavailable, helm_binary

    try:
        return helm_binary()
    except HelmUnavailable as exc:
        unavailable(f"helm unavailable: {exc}")
