"""External providers: built-in defaults, overridden and extended by `IIR_PROVIDERS_FILE` (YAML).

    providers:
      anthropic:
        models: {claude-sonnet-4-5: {fallbacks: [openai/gpt-4o]}}
      llamacpp:                       # any OpenAI-compatible server, by name
        base_url: http://llama.internal:8080/v1
        api_key_required: false
        models: [qwen2.5-7b]

A provider's key comes from `api_key_file` (a mounted Secret), else the environment variable
`api_key_env`; it is never logged. A provider that needs a key and has none is not offered.

`kind` says how a provider is called (its class in `providers.registry`): `openai` and `anthropic` by
their wire format; `azure` (Azure OpenAI deployments), `vertex` (Claude and Gemini on Google Vertex AI)
and `bedrock` (AWS Bedrock's Converse API) with their own block of options and credentials.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from iir_gateway.accounting.prices import Price
from iir_gateway.upstream.target import Timeouts


class ModelOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    fallbacks: tuple[str, ...] = ()
    # USD per million tokens; unset: the built-in list price of a well-known model, else free.
    price: Price | None = None
    # The name the upstream knows the model by: an Azure deployment, a Bedrock model ID or inference
    # profile, a Vertex model version (`claude-sonnet-4-5@20250929`); unset: the model's own name.
    deployment: str = ""


def read_secret(file: str, env: str, keys_dir: str = "") -> str:
    """A secret from `file`, else from `keys_dir`/`env` (a mounted Secret named like the variable), else
    from the environment variable `env`; "" when none has it. Read on every call: a rotated Secret file
    takes effect at once."""
    if file:
        try:
            return Path(file).read_text().strip()
        except OSError:
            return ""
    if keys_dir and env:
        try:
            return (Path(keys_dir) / env).read_text().strip()
        except OSError:
            pass
    return os.environ.get(env, "").strip() if env else ""


class EntraOptions(BaseModel):
    """Microsoft Entra ID client credentials: a service principal's secret exchanged for a bearer token."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tenant_id: str
    client_id: str
    client_secret_env: str = "AZURE_CLIENT_SECRET"
    client_secret_file: str = ""
    # Default: https://login.microsoftonline.com/{tenant_id}/oauth2/v2.0/token
    token_url: str = ""
    scope: str = "https://cognitiveservices.azure.com/.default"

    def url(self) -> str:
        return self.token_url or f"https://login.microsoftonline.com/{self.tenant_id}/oauth2/v2.0/token"


class AzureOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    api_version: str = "2024-10-21"
    # Unset: the `api-key` header with the provider's key.
    entra: EntraOptions | None = None


class VertexOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    project: str = ""  # default: the service account key's project_id
    region: str = "us-east5"  # `global` for the global endpoint
    # A service account's JSON key; default: the file GOOGLE_APPLICATION_CREDENTIALS names.
    credentials_file: str = ""
    scope: str = "https://www.googleapis.com/auth/cloud-platform"

    def key_file(self) -> str:
        return self.credentials_file or os.environ.get("GOOGLE_APPLICATION_CREDENTIALS", "")

    def default_base_url(self) -> str:
        host = "aiplatform.googleapis.com" if self.region == "global" else f"{self.region}-aiplatform.googleapis.com"
        return f"https://{host}"


class BedrockOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    region: str = ""  # default: AWS_REGION, else AWS_DEFAULT_REGION
    # An AWS shared credentials file (INI, as ~/.aws/credentials) and its profile; unset: the variables
    # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN.
    credentials_file: str = ""
    profile: str = "default"

    def signing_region(self) -> str:
        return self.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or ""


class ProviderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # How it is called: "openai" (chat/completions, completions, embeddings), "anthropic" (Messages API),
    # "azure", "vertex" or "bedrock" (each with its block of options below).
    kind: Literal["openai", "anthropic", "azure", "vertex", "bedrock"] = "openai"
    # Required but for vertex (https://{region}-aiplatform.googleapis.com) and bedrock
    # (https://bedrock-runtime.{region}.amazonaws.com). Azure: the resource's endpoint.
    base_url: str = ""
    api_key_env: str = ""
    api_key_file: str = ""
    # A folder of mounted Secret files named like the variables (IIR_PROVIDER_KEYS_DIR): read before the variable.
    api_key_dir: str = ""
    api_key_required: bool = True
    headers: dict[str, str] = Field(default_factory=dict)
    # Models offered in /v1/models (with their fallbacks); any other name is passed through as well.
    models: dict[str, ModelOptions] = Field(default_factory=dict)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    retries: int = Field(2, ge=0, le=10)
    azure: AzureOptions = Field(default_factory=AzureOptions)
    vertex: VertexOptions = Field(default_factory=VertexOptions)
    bedrock: BedrockOptions = Field(default_factory=BedrockOptions)

    @field_validator("models", mode="before")
    @classmethod
    def _names_list(cls, value: Any) -> Any:
        return {name: {} for name in value} if isinstance(value, list) else value

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _kind_defaults(self) -> ProviderConfig:
        if self.kind == "bedrock" and not self.bedrock.signing_region():
            raise ValueError("bedrock.region: Field required (or AWS_REGION in the environment)")
        if not self.base_url:
            if self.kind == "vertex":
                self.base_url = self.vertex.default_base_url()
            elif self.kind == "bedrock":
                self.base_url = f"https://bedrock-runtime.{self.bedrock.signing_region()}.amazonaws.com"
            else:
                raise ValueError("base_url: Field required")
        return self

    def api_key(self) -> str:
        """The key from the file, else from the environment; "" when neither has one."""
        return read_secret(self.api_key_file, self.api_key_env, self.api_key_dir)

    def missing_credentials(self) -> str:
        """What the operator must set before this provider can be used; "" when nothing is missing."""
        if not self.api_key_required or self.api_key():
            return ""
        where = [f"the environment variable {self.api_key_env}"] if self.api_key_env else []
        if self.api_key_file:
            where.insert(0, f"the file {self.api_key_file}")
        return " or ".join(where) or "an api_key_env or api_key_file in IIR_PROVIDERS_FILE"


BUILTIN: dict[str, dict[str, Any]] = {
    "openai": {"base_url": "https://api.openai.com/v1", "api_key_env": "OPENAI_API_KEY"},
    "anthropic": {"kind": "anthropic", "base_url": "https://api.anthropic.com", "api_key_env": "ANTHROPIC_API_KEY"},
    "openrouter": {"base_url": "https://openrouter.ai/api/v1", "api_key_env": "OPENROUTER_API_KEY"},
    "xai": {"base_url": "https://api.x.ai/v1", "api_key_env": "XAI_API_KEY"},
    "gemini": {"base_url": "https://generativelanguage.googleapis.com/v1beta/openai", "api_key_env": "GEMINI_API_KEY"},
    "ollama": {"base_url": "http://127.0.0.1:11434/v1", "api_key_required": False},
}


class ProvidersFileError(ValueError):
    pass


def load_providers(path: str, defaults: Timeouts, retries: int = 2, keys_dir: str = "") -> dict[str, ProviderConfig]:
    """The built-in providers merged with the file's (a missing or empty path: built-ins only)."""
    declared: dict[str, Any] = {}
    if path:
        try:
            doc = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ProvidersFileError(f"cannot read IIR_PROVIDERS_FILE {path}: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("providers", {}), dict):
            raise ProvidersFileError(f"{path}: expected a mapping `providers: {{name: {{...}}}}`")
        declared = doc.get("providers") or {}
    configs = {}
    for name in [*BUILTIN, *(n for n in declared if n not in BUILTIN)]:
        if name == "local" or "/" in name:
            raise ProvidersFileError(f"{path}: `{name}` cannot name an external provider")
        own = declared.get(name) or {}
        if not isinstance(own, dict):
            raise ProvidersFileError(f"{path}: providers.{name} must be a mapping")
        raw = {
            **BUILTIN.get(name, {}),
            "retries": retries,
            "api_key_dir": keys_dir,
            **own,
            "timeouts": {**defaults.model_dump(), **(own.get("timeouts") or {})},
        }
        try:
            configs[name] = ProviderConfig.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            where = "".join(f".{p}" for p in err["loc"])
            raise ProvidersFileError(f"{path}: providers.{name}{where}: {err['msg']}") from None
    return configs
