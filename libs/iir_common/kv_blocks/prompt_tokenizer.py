"""A model's tokenizer (tokenizer.json + tokenizer_config.json, as vLLM loads them from the model's folder),
encoding a chat as vLLM's OpenAI server does: the chat template rendered, then encoded without special tokens.

Encoding splits at the tokenizer's added tokens, as the tokenizer itself does, and keeps the ids of each piece in
an LRU: a long shared system prompt or a conversation's history is encoded once. Where splitting would change
the ids (a tokenizer that marks only the first piece of a text, like SentencePiece's `prepend_scheme=first`),
the whole text is encoded every time."""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from iir_common.kv_blocks.chat_template import ChatTemplate

_PROBE = "Hello world, again. {tok} And more text here {tok}\n trailing"


def _token_text(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("content", ""))
    return value if isinstance(value, str) else ""


class PromptTokenizer:
    def __init__(self, tokenizer: Tokenizer, config: dict[str, Any], cache_pieces: int = 16_384) -> None:
        self.tokenizer = tokenizer
        template = config.get("chat_template")
        if isinstance(template, list):  # named templates: the default one
            template = next((t.get("template") for t in template if t.get("name") == "default"), None)
        specials = {
            name: _token_text(config.get(name))
            for name in ("bos_token", "eos_token", "unk_token", "pad_token")
            if config.get(name) is not None
        }
        self.template = ChatTemplate(template, specials) if isinstance(template, str) else None
        added = sorted(
            (t.content for t in tokenizer.get_added_tokens_decoder().values() if t.content),
            key=len,
            reverse=True,
        )
        self._split = re.compile("(" + "|".join(re.escape(a) for a in added) + ")") if added else None
        self._pieces: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        self.cache_pieces = cache_pieces
        if self._split is not None and added:
            probe = _PROBE.format(tok=added[0])
            if self._encode_pieces(self.split(probe)) != self.encode(probe):
                self._split = None

    @classmethod
    def from_dir(cls, path: str | Path, cache_pieces: int = 16_384) -> PromptTokenizer:
        folder = Path(path)
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        config_file = folder / "tokenizer_config.json"
        config = json.loads(config_file.read_text()) if config_file.exists() else {}
        template_file = folder / "chat_template.jinja"
        if "chat_template" not in config and template_file.exists():
            config["chat_template"] = template_file.read_text()
        return cls(tokenizer, config, cache_pieces)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def split(self, text: str) -> list[str]:
        """The text cut before and after each added token (the pieces the tokenizer encodes apart)."""
        if self._split is None:
            return [text]
        return [p for p in self._split.split(text) if p]

    def _encode_pieces(self, pieces: Sequence[str], lengths: list[int] | None = None) -> list[int]:
        out: list[int] = []
        cache = self._pieces
        for piece in pieces:
            ids = cache.get(piece)
            if ids is None:
                ids = cache[piece] = tuple(self.encode(piece))
                if len(cache) > self.cache_pieces:
                    cache.popitem(last=False)
            else:
                cache.move_to_end(piece)
            out.extend(ids)
            if lengths is not None:
                lengths.append(len(ids))
        return out

    def chat_text(self, messages: Sequence[Any], tools: Sequence[Any] | None = None) -> str:
        if self.template is None:
            raise ValueError("the tokenizer has no chat template")
        return self.template.render(messages, tools)

    def chat_pieces(self, messages: Sequence[Any], tools: Sequence[Any] | None = None) -> list[str]:
        return self.split(self.chat_text(messages, tools))

    def chat_ids(self, messages: Sequence[Any], tools: Sequence[Any] | None = None) -> list[int]:
        """The prompt's token ids as vLLM's chat completions encode them (generation prompt added)."""
        return self._encode_pieces(self.chat_pieces(messages, tools))

    def prompt_ids(self, prompt: str) -> list[int]:
        """A completion prompt's ids (vLLM's /v1/completions adds the tokenizer's special tokens)."""
        return list(self.tokenizer.encode(prompt, add_special_tokens=True).ids)

    def pieces_ids(self, pieces: Sequence[str], lengths: list[int] | None = None) -> list[int]:
        """The ids of the pieces in order; `lengths`, when given, gets each piece's id count."""
        return self._encode_pieces(pieces, lengths)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=False))
