"""The labelled prompts under `training/` (category, complexity, language, text) and the held-out split."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

TRAINING_DIR = Path(__file__).resolve().parent.parent / "training"
HELD_OUT_SHARE = 0.25
SEED = 7


@dataclass(frozen=True)
class Example:
    category: str
    complexity: str
    language: str
    text: str


def load(directory: Path = TRAINING_DIR) -> list[Example]:
    examples = []
    for path in sorted(directory.glob("prompts_*.tsv")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 4:
                raise ValueError(f"{path.name}:{n}: expected 4 tab-separated fields")
            examples.append(Example(*parts))
    return examples


def split(examples: list[Example]) -> tuple[list[Example], list[Example]]:
    """(train, held out): a fixed share of every (category, complexity) group is held out."""
    groups: dict[tuple[str, str], list[Example]] = {}
    for e in examples:
        groups.setdefault((e.category, e.complexity), []).append(e)
    rng = random.Random(SEED)
    train, held = [], []
    for key in sorted(groups):
        items = groups[key][:]
        rng.shuffle(items)
        cut = max(1, round(len(items) * HELD_OUT_SHARE))
        held += items[:cut]
        train += items[cut:]
    return train, held
