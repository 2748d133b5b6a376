"""Simulated backend settings (`IIR_SIM_` environment variables)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class SimSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IIR_SIM_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8100
    # Served model names, comma separated.
    models: str = "llama-3-8b-instruct"
    # Time to first token, and decode speed (0 means no delay at all).
    ttft_ms: float = 0.0
    tokens_per_s: float = 0.0
    # Completion length when the request gives no max_tokens.
    default_max_tokens: int = 16

    @property
    def model_names(self) -> list[str]:
        return [m.strip() for m in self.models.split(",") if m.strip()]
