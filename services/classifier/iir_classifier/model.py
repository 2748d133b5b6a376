"""The prompt classifier: MiniLM sentence embeddings, trained linear heads, and language identification.

A conversation is read through its last user turn, blended with the turns before it (weights 0.75 and
0.25), so that "and now in French?" after a translation request stays a translation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from iir_classifier.encoder import Encoder
from iir_classifier.head import Heads, features
from iir_classifier.language import LanguageDetector

CATEGORIES = ("code", "math", "reasoning", "creative", "extraction", "chat", "translation")
LAST_TURN_WEIGHT = 0.75
CONTEXT_TURNS = 4


@dataclass(frozen=True)
class Classification:
    category: str
    category_confidence: float
    complexity: str
    complexity_score: float
    language: str
    language_confidence: float


class Classifier(Protocol):
    version: str

    def classify_batch(self, conversations: list[list[tuple[str, str]]]) -> list[Classification]: ...


class ModelMissing(RuntimeError):
    pass


def _split(turns: list[tuple[str, str]]) -> tuple[str, str]:
    """(the last user turn, the turns before it), as text."""
    last = max((i for i, (role, _) in enumerate(turns) if role == "user"), default=len(turns) - 1)
    context = " \n".join(content for _, content in turns[max(0, last - CONTEXT_TURNS) : last] if content)
    return turns[last][1] if turns else "", context


class EmbeddingClassifier:
    def __init__(self, encoder: Encoder, heads: Heads, languages: LanguageDetector) -> None:
        self.encoder = encoder
        self.heads = heads
        self.languages = languages
        self.version = heads.version

    @classmethod
    def load(cls, model_dir: Path, threads: int = 2) -> EmbeddingClassifier:
        missing = [n for n in ("encoder.onnx", "tokenizer.json", "heads.npz") if not (model_dir / n).exists()]
        if missing:
            raise ModelMissing(
                f"the classifier model is not built in {model_dir} (missing {', '.join(missing)}): "
                "run `make classifier-model`"
            )
        return cls(Encoder(model_dir, threads), Heads.load(model_dir / "heads.npz"), LanguageDetector())

    def vectors(self, texts: list[str]) -> np.ndarray:
        """The heads' input for each text alone (training uses this too)."""
        counts = np.array([len(self.encoder.token_ids(t)) for t in texts])
        return features(self.encoder.embed(texts), counts)

    def classify_batch(self, conversations: list[list[tuple[str, str]]]) -> list[Classification]:
        lasts, contexts = zip(*(_split(c) for c in conversations), strict=True)
        x = self.vectors(list(lasts))
        with_context = [i for i, c in enumerate(contexts) if c]
        if with_context:
            ctx = self.vectors([contexts[i] for i in with_context])
            x[with_context] = LAST_TURN_WEIGHT * x[with_context] + (1 - LAST_TURN_WEIGHT) * ctx
        category = self.heads.category.probabilities(x)
        complexity = self.heads.complexity.probabilities(x)
        hard = self.heads.complexity.labels.index("hard")
        results = []
        for i, last in enumerate(lasts):
            best = int(category[i].argmax())
            language, language_p = self.languages.detect(last)
            results.append(
                Classification(
                    self.heads.category.labels[best],
                    round(float(category[i, best]), 4),
                    "hard" if complexity[i, hard] >= 0.5 else "simple",
                    round(float(complexity[i, hard]), 4),
                    language,
                    round(language_p, 4),
                )
            )
        return results
