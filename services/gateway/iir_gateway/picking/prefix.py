"""Chained hashes of a prompt's leading blocks: equal prompts share their leading hashes, like a KV prefix."""

from __future__ import annotations

from typing import Any

BLOCK_CHARS = 128
MAX_BLOCKS = 128  # hash at most the first 16 KiB of a prompt


def prompt_text(body: dict[str, Any]) -> str:
    """The prompt's text: role:content of each message, or the completion prompt."""
    messages = body.get("messages")
    if isinstance(messages, list):
        parts = []
        for m in messages:
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, list):
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            parts.append(f"{m.get('role', '') if isinstance(m, dict) else ''}:{content or ''}\n")
        return "".join(parts)
    prompt = body.get("prompt")
    return prompt if isinstance(prompt, str) else ""


def prefix_blocks(body: dict[str, Any], block_chars: int = BLOCK_CHARS, max_blocks: int = MAX_BLOCKS) -> list[int]:
    """h[i] = hash(h[i-1], block i) over whole blocks of the prompt text (the partial last block is left out)."""
    return text_blocks(prompt_text(body), block_chars, max_blocks)


def text_blocks(text: str, block_chars: int = BLOCK_CHARS, max_blocks: int = MAX_BLOCKS) -> list[int]:
    blocks = []
    previous = 0
    for start in range(0, min(len(text) // block_chars, max_blocks) * block_chars, block_chars):
        previous = hash((previous, text[start : start + block_chars]))
        blocks.append(previous)
    return blocks
