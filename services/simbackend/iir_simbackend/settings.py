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
    # The engine model (docs/simulated-fleet.md): a calibrated profile name, e.g. `llama-3.1-8b-h100`;
    # empty keeps the fixed ttft_ms / tokens_per_s timing above.
    engine: str = ""
    # Engine time: 1.0 as on the GPU, 4.0 four times slower.
    time_scale: float = 1.0
    # Tokens coalesced per streamed chunk after the first, as vLLM's --stream-interval.
    stream_interval: int = 1
    # A folder with tokenizer.json and tokenizer_config.json; empty: a word is a token.
    tokenizer: str = ""
    # Overrides of the profile (0: the profile's): KV blocks, the token budget of a step, running requests.
    kv_cache_blocks: int = 0
    max_num_batched_tokens: int = 0
    max_num_seqs: int = 0
    # Block hashing as vLLM's --prefix-caching-hash-algo and PYTHONHASHSEED (vLLM's seed when unset).
    prefix_caching_hash_algo: str = "sha256"
    hash_seed: str = "vllm-none-hash"
    # KV events as vLLM's --kv-events-config (ZMQ PUB endpoint, ROUTER replay endpoint, topic); empty: none.
    kv_events_endpoint: str = ""
    kv_events_replay_endpoint: str = ""
    kv_events_topic: str = ""
    # usage.prompt_tokens_details with the cached tokens, as vLLM's --enable-prompt-tokens-details.
    enable_prompt_tokens_details: bool = False
    # Independent servers in this process (own engine, metrics and ports): replica i listens on port + i,
    # its KV events on the endpoints' ports + 2i.
    replicas: int = 1

    @property
    def model_names(self) -> list[str]:
        return [m.strip() for m in self.models.split(",") if m.strip() and m.strip() != "*"]

    @property
    def any_model(self) -> bool:
        return "*" in (m.strip() for m in self.models.split(","))

    @property
    def embedding_model_names(self) -> list[str]:
        return [m.strip() for m in self.embedding_models.split(",") if m.strip()]
