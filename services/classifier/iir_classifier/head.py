"""The trained heads: linear softmax layers over the sentence embedding and two length features."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


def features(embeddings: np.ndarray, token_counts: np.ndarray) -> np.ndarray:
    """The embedding plus the prompt's length (long prompts are more often hard)."""
    length = np.log1p(token_counts.astype(np.float32))[:, None] / 6.0
    return np.hstack([embeddings, length, length**2])


@dataclass(frozen=True)
class LinearHead:
    labels: tuple[str, ...]
    weights: np.ndarray  # (features, classes)
    bias: np.ndarray  # (classes,)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        logits = x @ self.weights + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        probabilities: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
        return probabilities


@dataclass(frozen=True)
class Heads:
    category: LinearHead
    complexity: LinearHead
    version: str

    def save(self, path: Path) -> None:
        np.savez(
            path,
            version=self.version,
            category_labels=np.array(self.category.labels),
            category_w=self.category.weights,
            category_b=self.category.bias,
            complexity_labels=np.array(self.complexity.labels),
            complexity_w=self.complexity.weights,
            complexity_b=self.complexity.bias,
        )

    @classmethod
    def load(cls, path: Path) -> Heads:
        data = np.load(path, allow_pickle=False)

        def head(name: str) -> LinearHead:
            return LinearHead(tuple(str(s) for s in data[f"{name}_labels"]), data[f"{name}_w"], data[f"{name}_b"])

        return cls(head("category"), head("complexity"), str(data["version"]))
