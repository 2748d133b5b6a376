"""The facts picking reads of a prompt: its token count and its KV block hashes as the engine computes them.

A model whose catalogue entry names a tokenizer (`kv_cache.tokenizer`, a folder under `IIR_TOKENIZERS_DIR`
holding the model's tokenizer.json and tokenizer_config.json) is tokenized and hashed exactly as vLLM does;
any other gets the approximate 128-character blocks of prefix.py and a token estimate."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iir.v1 import registry_pb2
from iir_common.kv_blocks import BlockHasher, PrefixBlocks, PromptTokenizer
from iir_gateway.picking.prefix import prompt_text, text_blocks

log = logging.getLogger(__name__)

_CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class PromptFacts:
    tokens: int
    kv_blocks: list[int] = field(default_factory=list)
    block_size: int = 16
    approximate_blocks: list[int] = field(default_factory=list)


class PromptBlocks:
    def __init__(self, tokenizers_dir: str | Path) -> None:
        self.root = Path(tokenizers_dir).resolve()
        # (tokenizer folder, algorithm, seed, block size) → its PrefixBlocks, None when it failed to load
        self._sources: dict[tuple[str, str, str, int], PrefixBlocks | None] = {}

    def _source(self, config: registry_pb2.KvCacheConfig) -> PrefixBlocks | None:
        key = (config.tokenizer, config.hash_algo or "sha256_cbor", config.hash_seed, config.block_size or 16)
        if key in self._sources:
            return self._sources[key]
        source = None
        folder = (self.root / config.tokenizer).resolve()
        try:
            if not folder.is_relative_to(self.root):
                raise ValueError(f"{config.tokenizer!r} is outside IIR_TOKENIZERS_DIR ({self.root})")
            hasher = BlockHasher(key[1], key[2] or None, key[3])
            source = PrefixBlocks(PromptTokenizer.from_dir(folder), hasher)
        except Exception as exc:  # a bad tokenizer must not fail requests: picking falls back to estimates
            log.error("tokenizer %r not usable, picking falls back to estimates: %s", config.tokenizer, exc)
        self._sources[key] = source
        return source

    def facts(self, entry: registry_pb2.Model, body: dict[str, Any], adapter: str = "") -> PromptFacts:
        """Token count and block hashes of the request's prompt for this model."""
        config = entry.kv_cache
        # An adapter's blocks are keyed by its name and path on the engine, a salted prompt's by its salt:
        # those are picked by estimate.
        precise = config.tokenizer and not adapter and not body.get("cache_salt")
        source = self._source(config) if precise else None
        if source is not None:
            extra = None
            try:
                messages = body.get("messages")
                if isinstance(messages, list):
                    tools = body.get("tools")
                    blocks = source.chat(messages, tools if isinstance(tools, list) else None, extra)
                    return PromptFacts(blocks.tokens, blocks.external, source.hasher.block_size)
                prompt = body.get("prompt")
                if isinstance(prompt, str):
                    blocks = source.completion(prompt, extra)
                    return PromptFacts(blocks.tokens, blocks.external, source.hasher.block_size)
            except Exception as exc:  # a template refusing these messages: vLLM will answer; pick by estimate
                log.debug("prompt not tokenized for picking: %s", exc)
        text = prompt_text(body)
        return PromptFacts(len(text) // _CHARS_PER_TOKEN, approximate_blocks=text_blocks(text))
