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
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from iir_gateway.accounting.prices import Price
from iir_gateway.upstream.target import Timeouts


class ModelOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    fallbacks: tuple[str, ...] = ()
    # USD per million tokens; unset: the built-in list price of a well-known model, else free.
    price: Price | None = None


class ProviderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Wire format: "openai" (chat/completions, completions, embeddings) or "anthropic" (Messages API).
    kind: Literal["openai", "anthropic"] = "openai"
    base_url: str
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

    @field_validator("models", mode="before")
    @classmethod
    def _names_list(cls, value: Any) -> Any:
        return {name: {} for name in value} if isinstance(value, list) else value

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value.rstrip("/")

    def api_key(self) -> str:
        """The key from the file, else from the environment; "" when neither has one."""
        if self.api_key_file:
            try:
                return Path(self.api_key_file).read_text().strip()
            except OSError:
                return ""
        if self.api_key_dir and self.api_key_env:
            try:
                return (Path(self.api_key_dir) / self.api_key_env).read_text().strip()
            except OSError:
                pass
        return os.environ.get(self.api_key_env, "").strip() if self.api_key_env else ""

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
            where = ".".join(str(p) for p in err["loc"])
            raise ProvidersFileError(f"{path}: providers.{name}.{where}: {err['msg']}") from None
    return configs
