"""Sentence embeddings with the exported MiniLM encoder: onnxruntime + tokenizers + numpy (no torch).

Long prompts keep their beginning and their end (where the question usually is): at most
`max_tokens` tokens, of which `head_tokens` from the start.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

MAX_CHARS = 4000  # characters looked at on each side of a long text, before tokenizing


class Encoder:
    def __init__(self, model_dir: Path, threads: int = 2, max_tokens: int = 128, head_tokens: int = 32) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(model_dir / "encoder.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.max_tokens = max_tokens
        self.head_tokens = head_tokens

    def token_ids(self, text: str) -> list[int]:
        if len(text) > 2 * MAX_CHARS:
            text = text[:MAX_CHARS] + " … " + text[-MAX_CHARS:]
        ids: list[int] = self.tokenizer.encode(text).ids  # [CLS] … [SEP]
        if len(ids) > self.max_tokens:
            tail = self.max_tokens - self.head_tokens
            ids = ids[: self.head_tokens] + ids[-tail:]
        return ids

    def embed(self, texts: list[str]) -> np.ndarray:
        """One L2-normalised 384-dimensional row per text (mean pooling over real tokens)."""
        encoded = [self.token_ids(t) for t in texts]
        width = max(len(e) for e in encoded)
        ids = np.zeros((len(encoded), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for i, e in enumerate(encoded):
            ids[i, : len(e)] = e
            mask[i, : len(e)] = 1
        hidden = self.session.run(
            None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        )[0]
        summed = (hidden * mask[:, :, None]).sum(axis=1)
        pooled = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        embeddings: np.ndarray = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return embeddings
