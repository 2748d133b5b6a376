"""iir_common.kv_blocks: vLLM's block hash, the chat template as vLLM renders it, piecewise cached encoding."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import cbor2
import pytest

from iir_common.kv_blocks import BlockHasher, PrefixBlocks, PromptTokenizer
from iir_common.kv_blocks.chat_template import conversation
from iir_common.kv_blocks.testing import tiny_tokenizer_dir


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> PromptTokenizer:
    return PromptTokenizer.from_dir(tiny_tokenizer_dir(tmp_path_factory.mktemp("tok")))


def test_block_hash_is_vllms_chain() -> None:
    hasher = BlockHasher("sha256_cbor", seed="0", block_size=4)
    root = hashlib.sha256(cbor2.dumps("0", canonical=True)).digest()
    first = hashlib.sha256(cbor2.dumps((root, (1, 2, 3, 4), None), canonical=True)).digest()
    second = hashlib.sha256(cbor2.dumps((first, (5, 6, 7, 8), None), canonical=True)).digest()
    assert hasher.block_hashes([1, 2, 3, 4, 5, 6, 7, 8, 9]) == [first, second]  # the partial block is not hashed
    assert BlockHasher.external(second) == int.from_bytes(second[-8:], "big")
    assert hasher.block_hashes([5, 6, 7, 8], parent=first) == [second]


def test_seed_and_algorithm_change_every_hash() -> None:
    tokens = list(range(32))
    base = BlockHasher("sha256_cbor", "0").block_hashes(tokens)
    assert BlockHasher("sha256_cbor", "1").block_hashes(tokens)[0] != base[0]
    assert BlockHasher("sha256", "0").block_hashes(tokens)[0] != base[0]
    unset = BlockHasher("sha256_cbor", None).block_hashes(tokens)[0]  # vLLM 0.32's root without PYTHONHASHSEED
    assert unset == BlockHasher("sha256_cbor", "vllm-none-hash").block_hashes(tokens)[0] != base[0]
    with pytest.raises(ValueError, match="unknown prefix caching hash"):
        BlockHasher("md5")


def test_lora_extra_keys_separate_blocks() -> None:
    hasher = BlockHasher("sha256_cbor", "0")
    tokens = list(range(16))
    assert hasher.block_hashes(tokens, ("adapter-a",)) != hasher.block_hashes(tokens)


def test_piecewise_encoding_equals_whole(tokenizer: PromptTokenizer) -> None:
    messages = [
        {"role": "system", "content": "you are a helpful coding agent " * 50},
        {"role": "user", "content": [{"type": "text", "text": "read file"}, {"type": "text", "text": "run test"}]},
    ]
    text = tokenizer.chat_text(messages)
    assert text.endswith("<|im_start|>assistant\n")
    assert "read file\nrun test" in text  # text parts joined by newlines, as vLLM does
    assert tokenizer.chat_ids(messages) == tokenizer.encode(text)


def test_tool_call_arguments_reach_the_template_parsed() -> None:
    calls = [{"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]
    (message,) = conversation([{"role": "assistant", "content": None, "tool_calls": calls}])
    assert message["tool_calls"][0]["function"]["arguments"] == {"a": 1}


def test_prefix_blocks_reuse_a_shared_prefix(tokenizer: PromptTokenizer) -> None:
    blocks = PrefixBlocks(tokenizer, BlockHasher())
    history: list[dict[str, Any]] = [{"role": "system", "content": "you are a helpful coding agent " * 80}]
    for turn in range(4):
        history.append({"role": "user", "content": f"run test {turn}"})
        got = blocks.chat(history)
        expected = BlockHasher().block_hashes(tokenizer.chat_ids(history))
        assert got.hashes == expected
        assert got.external == [BlockHasher.external(h) for h in expected]
        history.append({"role": "assistant", "content": "tokens routing " * turn})


def test_a_template_that_raises_is_a_value_error_for_callers(tmp_path: Path) -> None:
    folder = tiny_tokenizer_dir(tmp_path)
    (folder / "tokenizer_config.json").write_text('{"chat_template": "{{ raise_exception(\'no system\') }}"}')
    with pytest.raises(Exception, match="no system"):
        PromptTokenizer.from_dir(folder).chat_ids([{"role": "user", "content": "x"}])
