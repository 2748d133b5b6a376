"""A small real tokenizer folder for tests: a byte-level BPE trained in milliseconds on a fixed text, with
ChatML special tokens and a ChatML chat template (the layout SmolLM2 and Qwen use)."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_CORPUS = (
    "the model answers every question with calm and measured words about tokens routing gateways clusters "
    "replicas latency throughput cache prefix decode batch scheduler kernel tensor memory stream chunk request "
    "response server client system user assistant tool you are a helpful coding agent read file write test run"
)


def tiny_tokenizer_dir(folder: Path) -> Path:
    """Writes tokenizer.json and tokenizer_config.json into `folder` (created) and returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([_CORPUS] * 4, trainer)
    tokenizer.save(str(folder / "tokenizer.json"))
    config = {"chat_template": CHATML, "bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder
