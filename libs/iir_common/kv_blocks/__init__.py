"""A prompt's KV-cache blocks as vLLM computes them: the model's tokenizer and chat template, then the engine's
chained block hash, so a router can name the blocks an engine reports in its KV events."""

from iir_common.kv_blocks.hashing import HASH_ALGOS, BlockHasher
from iir_common.kv_blocks.prefix_blocks import Blocks, PrefixBlocks
from iir_common.kv_blocks.prompt_tokenizer import PromptTokenizer

__all__ = ["HASH_ALGOS", "BlockHasher", "Blocks", "PrefixBlocks", "PromptTokenizer"]
