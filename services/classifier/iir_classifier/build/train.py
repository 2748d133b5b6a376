"""Trains the category and complexity heads on the training split and reports held-out accuracy and F1.

Writes `heads.npz` and `metrics.json` next to the exported encoder. Run by `make classifier-model`.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

from iir_classifier.dataset import Example, load, split
from iir_classifier.encoder import Encoder
from iir_classifier.head import Heads, LinearHead, features


def _vectors(encoder: Encoder, examples: list[Example]) -> np.ndarray:
    texts = [e.text for e in examples]
    counts = np.array([len(encoder.token_ids(t)) for t in texts])
    embeddings = np.vstack([encoder.embed(texts[i : i + 32]) for i in range(0, len(texts), 32)])
    return features(embeddings, counts)


def _fit(x: np.ndarray, labels: list[str], c: float) -> LinearHead:
    model = LogisticRegression(C=c, max_iter=5000)
    model.fit(x, labels)
    classes = tuple(str(k) for k in model.classes_)
    if len(classes) == 2:  # binary: sklearn keeps one row; expand to two softmax columns
        w = np.hstack([-model.coef_.T / 2, model.coef_.T / 2])
        b = np.array([-model.intercept_[0] / 2, model.intercept_[0] / 2])
    else:
        w, b = model.coef_.T, model.intercept_
    return LinearHead(classes, w.astype(np.float32), b.astype(np.float32))


def train(model_dir: Path) -> dict[str, object]:
    examples = load()
    train_set, held = split(examples)
    encoder = Encoder(model_dir)
    x_train, x_held = _vectors(encoder, train_set), _vectors(encoder, held)
    version = f"minilm-l6-heads-{time.strftime('%Y%m%d')}-{len(examples)}"
    heads = Heads(
        _fit(x_train, [e.category for e in train_set], 8.0),
        _fit(x_train, [e.complexity for e in train_set], 4.0),
        version,
    )
    heads.save(model_dir / "heads.npz")
    cat_true = [e.category for e in held]
    cat_pred = [heads.category.labels[i] for i in heads.category.probabilities(x_held).argmax(axis=1)]
    cx_true = [e.complexity for e in held]
    cx_pred = [heads.complexity.labels[i] for i in heads.complexity.probabilities(x_held).argmax(axis=1)]
    metrics = {
        "version": version,
        "examples": len(examples),
        "train": len(train_set),
        "held_out": len(held),
        "languages": dict(Counter(e.language for e in examples)),
        "category_accuracy": round(float(accuracy_score(cat_true, cat_pred)), 4),
        "category_macro_f1": round(float(f1_score(cat_true, cat_pred, average="macro")), 4),
        "complexity_accuracy": round(float(accuracy_score(cx_true, cx_pred)), 4),
        "complexity_macro_f1": round(float(f1_score(cx_true, cx_pred, average="macro")), 4),
        "per_category_f1": {
            k: round(float(v), 4)
            for k, v in zip(
                sorted(set(cat_true)),
                f1_score(cat_true, cat_pred, average=None, labels=sorted(set(cat_true))),
                strict=True,
            )
        },
    }
    (model_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


if __name__ == "__main__":
    print(json.dumps(train(Path(sys.argv[1])), indent=2))
