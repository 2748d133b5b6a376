"""The contract suite against a real vLLM (the CPU build serving SmolLM2-135M), through the gateway.

Collected only by `make test-vllm` (IIR_TEST_VLLM=1), which builds the environment once in `.cache/vllm`
(see `iir_dev.real_vllm`); `make test` leaves it out.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from iir_dev import datastores, real_vllm
from iir_dev.stack import Stack
from tests.conftest import inference_model, write_models

if os.environ.get("IIR_TEST_VLLM") != "1":
    collect_ignore_glob = ["test_*.py"]

MODEL = f"local/{real_vllm.SERVED}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def vllm_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A vLLM started for the session, or the one at IIR_VLLM_URL (`python -m iir_dev.real_vllm serve`)."""
    if os.environ.get("IIR_VLLM_URL"):
        yield os.environ["IIR_VLLM_URL"].rstrip("/")
        return
    port = _free_port()
    events = _free_port(), _free_port()
    proc = real_vllm.serve(port, tmp_path_factory.mktemp("vllm") / "vllm.log", kv_events=events)
    os.environ["IIR_TEST_VLLM_KV_EVENTS"] = f"{events[0]},{events[1]}"
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(30)


@pytest.fixture(scope="session")
def vllm_kv_events(vllm_url: str) -> tuple[int, int]:
    """The session vLLM's KV event ports (PUB, replay), on as the operator turns them on."""
    ports = os.environ.get("IIR_TEST_VLLM_KV_EVENTS")
    if not ports:
        pytest.skip("an outside vLLM (IIR_VLLM_URL): its KV events are unknown")
    pub, replay = ports.split(",")
    return int(pub), int(replay)


@pytest.fixture(scope="session")
def vllm_stack(vllm_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("vllm-stack")
    write_models(work / "models.yaml", [inference_model(real_vllm.SERVED, vllm_url)])
    pg = datastores.postgres(work, database="iir_test_vllm")
    rd = datastores.redis(work)
    stack = Stack(workdir=work, database_url=pg.url, redis_url=rd.url)
    stack.start()
    yield stack
    stack.stop()
    pg.stop()
    rd.stop()


@pytest.fixture(scope="session")
def key(vllm_stack: Stack) -> str:
    return vllm_stack.create_key("vllm-contract")
