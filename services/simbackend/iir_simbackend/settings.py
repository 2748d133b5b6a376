"""Simulated backend settings (`IIR_SIM_` environment variables)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class SimSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IIR_SIM_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8100
    # Served model names, comma separated; `*` also serves any name asked for (the dev stack).
    models: str = "llama-3-8b-instruct"
    # Embedding models (served for /v1/embeddings only, as vLLM serves one task per model), their size.
    embedding_models: str = ""
    embedding_dims: int = 384
    max_model_len: int = 8192
    # Time to first token, and decode speed (0 means no delay at all).
    ttft_ms: float = 0.0
    tokens_per_s: float = 0.0
    # LoRA adapters loaded at run time, at most this many at once (vLLM's --enable-lora --max-loras with
    # VLLM_ALLOW_RUNTIME_LORA_UPDATING); 0: no LoRA, and no adapter routes (404), as vLLM without them.
    max_loras: int = 0
    # Longest completion when the request gives no max_tokens (0: until the model stops, as vLLM does).
    default_max_tokens: int = 0

    @property
    def model_names(self) -> list[str]:
        return [m.strip() for m in self.models.split(",") if m.strip() and m.strip() != "*"]

    @property
    def any_model(self) -> bool:
        return "*" in (m.strip() for m in self.models.split(","))

    @property
    def embedding_model_names(self) -> list[str]:
        return [m.strip() for m in self.embedding_models.split(",") if m.strip()]
