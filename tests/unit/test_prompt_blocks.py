"""The prompt facts picking reads: exact blocks from a model's tokenizer, estimates whenever it cannot be
trusted (a folder outside IIR_TOKENIZERS_DIR, a broken tokenizer, a template refusing the messages)."""

from __future__ import annotations

from pathlib import Path

from iir.v1 import registry_pb2
from iir_common.kv_blocks import BlockHasher, PromptTokenizer
from iir_common.kv_blocks.testing import tiny_tokenizer_dir
from iir_gateway.picking.prompt_blocks import PromptBlocks

BODY = {"messages": [{"role": "system", "content": "you are a helpful coding agent " * 40}]}


def model(tokenizer: str) -> registry_pb2.Model:
    config = registry_pb2.KvCacheConfig(tokenizer=tokenizer, block_size=16, hash_algo="sha256_cbor", hash_seed="0")
    return registry_pb2.Model(name="local/m", kv_cache=config)


def test_a_named_tokenizer_gives_the_engines_blocks(tmp_path: Path) -> None:
    folder = tiny_tokenizer_dir(tmp_path / "tok")
    facts = PromptBlocks(tmp_path).facts(model("tok"), BODY)
    ids = PromptTokenizer.from_dir(folder).chat_ids(BODY["messages"])
    assert facts.tokens == len(ids)
    assert facts.kv_blocks == BlockHasher("sha256_cbor", "0", 16).external_hashes(ids)


def test_a_folder_outside_the_tokenizers_dir_is_not_read(tmp_path: Path) -> None:
    tiny_tokenizer_dir(tmp_path / "outside")
    root = tmp_path / "tokenizers"
    root.mkdir()
    for name in ("../outside", str(tmp_path / "outside")):
        facts = PromptBlocks(root).facts(model(name), BODY)
        assert facts.kv_blocks == [] and facts.approximate_blocks  # the estimate, never the file


def test_a_broken_tokenizer_or_refused_messages_fall_back_to_the_estimate(tmp_path: Path) -> None:
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "tokenizer.json").write_text("{not json")
    assert PromptBlocks(tmp_path).facts(model("broken"), BODY).kv_blocks == []
    folder = tiny_tokenizer_dir(tmp_path / "strict")
    (folder / "tokenizer_config.json").write_text('{"chat_template": "{{ raise_exception(\'no\') }}"}')
    facts = PromptBlocks(tmp_path).facts(model("strict"), BODY)
    assert facts.kv_blocks == [] and facts.tokens > 0
