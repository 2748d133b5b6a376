"""Base class for every service's settings: `IIR_`-prefixed environment variables."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class IIRSettings(BaseSettings):
    """Common settings; each service subclasses it with its own fields."""

    model_config = SettingsConfigDict(env_prefix="IIR_", extra="ignore", env_file=None)

    log_level: str = "INFO"
