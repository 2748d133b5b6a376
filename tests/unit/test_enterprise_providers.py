"""The enterprise providers' configuration and routing without a network: the README's providers file,
kind defaults and refusals, where each kind sends a model, and what it says is missing."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest
import yaml

from iir_gateway.picking.state import EndpointStates
from iir_gateway.providers.base import RouteRequest
from iir_gateway.providers.config import ProviderConfig, ProvidersFileError, load_providers
from iir_gateway.providers.registry import KINDS, external_provider
from iir_gateway.upstream.target import Timeouts

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def enterprise_example() -> str:
    section = README.split("**Enterprise providers**", 1)[1]
    found = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert found is not None
    return found.group(1)


def test_the_readme_example_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    path = tmp_path / "providers.yaml"
    path.write_text(enterprise_example())
    configs = load_providers(str(path), Timeouts())
    assert (configs["azure"].kind, configs["vertex"].kind, configs["bedrock"].kind) == ("azure", "vertex", "bedrock")
    assert configs["vertex"].base_url == "https://us-east5-aiplatform.googleapis.com"
    assert configs["bedrock"].base_url == "https://bedrock-runtime.us-east-1.amazonaws.com"
    assert configs["azure"].models["gpt-4o"].deployment == "gpt-4o-prod"


@pytest.mark.parametrize(
    ("provider", "message"),
    [
        ({"kind": "azure"}, "base_url: Field required"),
        ({"kind": "bedrock"}, "bedrock.region: Field required"),
        ({"kind": "azure", "base_url": "x", "models": ["m"]}, "must start with http"),
        ({"kind": "azure", "base_url": "https://x", "azure": {"entra": {"client_id": "c"}}}, "tenant_id"),
    ],
)
def test_what_a_kind_requires(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, provider: dict[str, object], message: str
) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    path = tmp_path / "providers.yaml"
    path.write_text(yaml.safe_dump({"providers": {"p": provider}}))
    with pytest.raises(ProvidersFileError, match=message):
        load_providers(str(path), Timeouts())


async def test_where_each_kind_sends_a_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IIR_TEST_AZ_KEY", "k")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    path = tmp_path / "providers.yaml"
    path.write_text(
        "providers:\n"
        "  az: {kind: azure, base_url: 'https://r.openai.azure.com', api_key_env: IIR_TEST_AZ_KEY,"
        " models: {gpt-4o: {deployment: prod}}}\n"
        "  vx: {kind: vertex, vertex: {project: p, region: global, credentials_file: /nonexistent}}\n"
        "  br: {kind: bedrock, bedrock: {region: eu-west-1}}\n"
    )
    configs = load_providers(str(path), Timeouts())
    states = EndpointStates()
    azure = await external_provider("az", configs["az"], states).resolve("gpt-4o", RouteRequest({}))
    assert azure.base_url == "https://r.openai.azure.com/openai/deployments/prod" and azure.model == "prod"
    assert azure.query == "api-version=2024-10-21" and azure.headers == {"api-key": "k"} and azure.wire == "openai"
    vertex = external_provider("vx", configs["vx"], states)
    assert "/nonexistent" in vertex.missing_credentials() and vertex.list_models() == []
    assert vertex.route("claude-x@1").base_url == (
        "https://aiplatform.googleapis.com/v1/projects/p/locations/global/publishers/anthropic/models"
    )
    assert vertex.route("gemini-2.5-pro").wire == "gemini" and vertex.route("claude-x@1").wire == "vertex-anthropic"
    bedrock = await external_provider("br", configs["br"], states).resolve("amazon.nova-pro-v1:0", RouteRequest({}))
    assert bedrock.base_url == "https://bedrock-runtime.eu-west-1.amazonaws.com" and bedrock.auth is not None
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    assert "AWS_ACCESS_KEY_ID" in external_provider("br", configs["br"], states).missing_credentials()


def test_every_kind_has_a_provider_class() -> None:
    kinds = ProviderConfig.model_fields["kind"].annotation
    assert set(get_args(kinds)) == set(KINDS)
