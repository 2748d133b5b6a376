"""What the protocols that write the pipeline's chat answers in their own form read of them (chat
completions and their stream's chunks)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def first_choices(chunk: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A stream chunk's parts of the first choice (these APIs have one answer a request)."""
    for choice in chunk.get("choices") or []:
        if isinstance(choice, dict) and choice.get("index", 0) == 0:
            yield choice


def reasoning(message: dict[str, Any]) -> Any:
    """A message's (or a delta's) reasoning: `reasoning_content`, or `reasoning` as some servers name it."""
    return message.get("reasoning_content") or message.get("reasoning")
