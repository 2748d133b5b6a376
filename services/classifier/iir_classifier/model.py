"""Prompt classifiers behind one interface.

`KeywordClassifier` is the dependency-free baseline used until the trained embedding model
(issue 5) is built; it is deterministic and fast, and its answers carry low confidence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

CATEGORIES = ("code", "math", "reasoning", "creative", "extraction", "chat", "translation")


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

    def classify(self, turns: list[tuple[str, str]]) -> Classification: ...


_KEYWORDS: dict[str, tuple[str, ...]] = {
    "code": ("def ", "function", "class ", "python", "javascript", "bug", "compile", "sql", "regex", "```"),
    "math": ("integral", "equation", "solve", "derivative", "prove", "theorem", "matrix", "probability"),
    "reasoning": ("why", "explain", "compare", "step by step", "trade-off", "analyze", "analyse"),
    "creative": ("poem", "story", "write a song", "haiku", "imagine", "fiction"),
    "extraction": ("summarize", "summarise", "extract", "tl;dr", "list the", "key points"),
    "translation": ("translate", "in french", "in german", "in spanish", "into english"),
}
_STOPWORDS = {
    "en": ("the", "and", "is", "what", "how", "you"),
    "fr": ("le", "la", "les", "est", "et", "vous"),
    "de": ("der", "die", "das", "und", "ist", "nicht"),
    "es": ("el", "los", "las", "es", "y", "que"),
}
_WORD = re.compile(r"[\w']+")


class KeywordClassifier:
    """Keyword and stop-word heuristics; the last user turn counts double."""

    version = "keyword-baseline-1"

    def classify(self, turns: list[tuple[str, str]]) -> Classification:
        user = [c for r, c in turns if r == "user"] or [c for _, c in turns]
        text = " ".join(user[:-1] + user[-1:] * 2).lower() if user else ""
        scores = {cat: sum(text.count(k) for k in kws) for cat, kws in _KEYWORDS.items()}
        best = max(scores, key=lambda c: scores[c])
        total = sum(scores.values())
        category, confidence = (best, scores[best] / total) if total else ("chat", 0.5)
        words = _WORD.findall(text)
        lang_hits = {lang: sum(w in sw for w in words) for lang, sw in _STOPWORDS.items()}
        lang = max(lang_hits, key=lambda k: lang_hits[k])
        lang_conf = lang_hits[lang] / max(1, sum(lang_hits.values())) if lang_hits[lang] else 0.3
        hard = min(1.0, len(words) / 400 + (0.4 if category in ("code", "math", "reasoning") else 0.0))
        return Classification(category, round(confidence, 3), "hard" if hard >= 0.5 else "simple",
                              round(hard, 3), lang if lang_hits[lang] else "en", round(lang_conf, 3))
