"""Token ids for the engine: the model's real tokenizer and chat template (`iir_common.kv_blocks`), the
one the gateway uses, so block hashes agree; or, without one, a deterministic stand-in (a word is a
token) so tests need no tokenizer files."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from typing import Any, Protocol

import orjson

from iir_common.kv_blocks import PromptTokenizer


class Tokenizer(Protocol):
    def chat_ids(self, messages: Sequence[Any], tools: Sequence[Any] | None) -> list[int]: ...

    def prompt_ids(self, prompt: str) -> list[int]: ...

    def output_ids(self, tokens: Sequence[str]) -> list[int]:
        """The ids of generated text, given as the pieces the answer streams."""
        ...


class RealTokenizer:
    def __init__(self, tokenizer: PromptTokenizer) -> None:
        self.tokenizer = tokenizer

    @classmethod
    def from_dir(cls, path: str) -> RealTokenizer:
        return cls(PromptTokenizer.from_dir(path))

    def chat_ids(self, messages: Sequence[Any], tools: Sequence[Any] | None) -> list[int]:
        return self.tokenizer.chat_ids(messages, tools)

    def prompt_ids(self, prompt: str) -> list[int]:
        return self.tokenizer.prompt_ids(prompt)

    def output_ids(self, tokens: Sequence[str]) -> list[int]:
        return self.tokenizer.encode("".join(tokens))


_VOCAB = 128_000
_ROLE = {"system": 1, "user": 2, "assistant": 3, "tool": 4}
_TOOLS, _GENERATION_PROMPT, _OTHER_ROLE = 5, 6, 7
_FIRST_WORD_ID = 256


@functools.lru_cache(maxsize=1 << 16)
def _word_id(word: str) -> int:
    return _FIRST_WORD_ID + int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "big") % _VOCAB


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else orjson.dumps(content).decode()


class StandInTokenizer:
    """Whitespace words hashed to ids; a marker id per role and for the generation prompt."""

    def _words(self, text: str) -> list[int]:
        return [_word_id(w) for w in text.split()]

    def chat_ids(self, messages: Sequence[Any], tools: Sequence[Any] | None) -> list[int]:
        ids: list[int] = []
        if tools:
            ids += [_TOOLS, *self._words(orjson.dumps(tools).decode())]
        for message in messages:
            if not isinstance(message, dict):
                continue
            ids.append(_ROLE.get(str(message.get("role")), _OTHER_ROLE))
            ids += self._words(_text(message.get("content")))
            if message.get("tool_calls"):
                ids += self._words(orjson.dumps(message["tool_calls"]).decode())
        ids.append(_GENERATION_PROMPT)
        return ids

    def prompt_ids(self, prompt: str) -> list[int]:
        return self._words(prompt) or [_OTHER_ROLE]

    def output_ids(self, tokens: Sequence[str]) -> list[int]:
        return [_word_id(t) for t in tokens]


def load_tokenizer(path: str) -> Tokenizer:
    return RealTokenizer.from_dir(path) if path else StandInTokenizer()
