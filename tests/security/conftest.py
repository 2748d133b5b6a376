"""A stack started with the environment the Helm chart renders for the gateway (read from `helm template`,
so these tests break when the chart's defaults regress), with the OpenAI fake as an external provider."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from iir_dev.helm import HelmUnavailable, helm_binary, helm_env
from iir_dev.stack import MANAGED_VARIABLES, REPO, Stack
from tests.conftest import MASTER_KEY, SERVED, inference_model, write_models
from tests.integration.test_providers import OPENAI_KEY, start_fake
from tests.waiting import unavailable

CHART = REPO / "deploy" / "helm" / "iir"
# What the stack sets itself: addresses, ports, and files that only exist in the pod.
_LOCAL = {"IIR_GATEWAY_HOST", "IIR_PROVIDERS_FILE", "IIR_ROUTING_FILE"}


def chart_gateway_env() -> dict[str, str]:
    """The gateway container's plain `IIR_` values, as the chart renders them with default values."""
    try:
        helm = helm_binary()
    except HelmUnavailable as exc:
        unavailable(f"helm unavailable: {exc}")
    out = subprocess.run(
        [helm, "template", "iir", str(CHART)], capture_output=True, text=True, env=helm_env(), check=True
    ).stdout
    gateway = next(
        d for d in yaml.safe_load_all(out) if d and d["kind"] == "Deployment" and d["metadata"]["name"] == "iir-gateway"
    )
    env = gateway["spec"]["template"]["spec"]["containers"][0]["env"]
    return {
        e["name"]: e["value"]
        for e in env
        if e["name"].startswith("IIR_")
        and "value" in e
        and not e["name"].endswith("_FILE")
        and e["name"] not in MANAGED_VARIABLES | _LOCAL
        and not e["name"].endswith("_ADDR")
        and not e["name"].endswith("_DIR")
    }


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[str]:
    proc, url = start_fake("openai_api", OPENAI_KEY)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="session")
def chart_stack(
    tmp_path_factory: pytest.TempPathFactory, database_url: str, redis_url: str, fake_openai: str
) -> Iterator[Stack]:
    work = Path(tmp_path_factory.mktemp("chart-stack"))
    providers = work / "providers.yaml"
    providers.write_text(
        yaml.safe_dump(
            {"providers": {"openai": {"base_url": f"{fake_openai}/v1", "models": ["gpt-4o-mini", "gpt-leaky-chars"]}}}
        )
    )
    env = {
        **chart_gateway_env(),
        "IIR_REDIS_PREFIX": f"iir-sec-{uuid.uuid4().hex[:8]}:",
        "IIR_MODELS_FILE_POLL_S": "0.2",
        "IIR_PROVIDERS_FILE": str(providers),
        "OPENAI_API_KEY": OPENAI_KEY,
    }
    stack = Stack(workdir=work, database_url=database_url, redis_url=redis_url, master_key=MASTER_KEY, env=env)
    write_models(stack.models_file, [inference_model(SERVED, stack.sim_url)])
    stack.start()
    yield stack
    stack.stop()


def client_from(address: str) -> httpx.Client:
    """An HTTP client whose connections come from `address` (any 127.x.y.z is this machine)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=20)
