"""The trained classifier: accuracy floor on the held-out split, multi-turn weighting, long prompts."""

from __future__ import annotations

import json

import pytest

from iir_classifier.dataset import load, split
from iir_classifier.model import EmbeddingClassifier, ModelMissing
from iir_classifier.settings import DEFAULT_MODEL_DIR


@pytest.fixture(scope="module")
def classifier() -> EmbeddingClassifier:
    return EmbeddingClassifier.load(DEFAULT_MODEL_DIR)


def test_held_out_accuracy_floor(classifier: EmbeddingClassifier) -> None:
    _, held = split(load())
    results = classifier.classify_batch([[("user", e.text)] for e in held])
    category = sum(r.category == e.category for r, e in zip(results, held, strict=True)) / len(held)
    complexity = sum(r.complexity == e.complexity for r, e in zip(results, held, strict=True)) / len(held)
    assert category >= 0.72, f"category accuracy {category:.2f} on {len(held)} held-out prompts"
    assert complexity >= 0.82, f"complexity accuracy {complexity:.2f}"
    assert json.loads((DEFAULT_MODEL_DIR / "metrics.json").read_text())["held_out"] == len(held)


def test_the_split_holds_out_every_category_and_language_mix() -> None:
    train, held = split(load())
    assert len(train) + len(held) >= 350 and not {e.text for e in train} & {e.text for e in held}
    assert {e.category for e in held} == {"code", "math", "reasoning", "creative", "extraction", "chat", "translation"}
    assert len({e.language for e in load()}) >= 6


def test_result_fields(classifier: EmbeddingClassifier) -> None:
    [code, french] = classifier.classify_batch(
        [
            [
                (
                    "user",
                    "Implement a concurrent B-tree in Rust with lock coupling and write property-based tests for it.",
                )
            ],
            [("user", "Bonjour, pouvez-vous m'aider à écrire une lettre de motivation pour un poste d'infirmière ?")],
        ]
    )
    assert code.category == "code" and code.complexity == "hard" and 0.5 <= code.complexity_score <= 1
    assert 0 < code.category_confidence <= 1 and code.language == "en"
    assert french.language == "fr" and french.language_confidence > 0.5


def test_the_last_user_turn_weighs_most(classifier: EmbeddingClassifier) -> None:
    conversation = [
        ("user", "Write a haiku about the sea."),
        ("assistant", "Waves fold into foam…"),
        ("user", "Now solve the integral of x^2 sin(x) dx step by step."),
    ]
    assert classifier.classify_batch([conversation])[0].category == "math"


def test_long_prompts_are_truncated_not_rejected(classifier: EmbeddingClassifier) -> None:
    long = "lorem ipsum dolor " * 20_000 + " Translate this sentence into German please."
    assert len(classifier.encoder.token_ids(long)) == 128
    assert classifier.classify_batch([[("user", long)]])[0].category


def test_missing_model_says_how_to_build_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ModelMissing, match="make classifier-model"):
        EmbeddingClassifier.load(tmp_path)
