"""Language identification with py3langid (character n-grams, 97 languages, numpy only)."""

from __future__ import annotations

from py3langid.langid import MODEL_FILE, LanguageIdentifier


class LanguageDetector:
    def __init__(self) -> None:
        self._identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)

    def detect(self, text: str) -> tuple[str, float]:
        """ISO 639-1 code and probability; very short texts are unreliable and get a low probability."""
        if not text.strip():
            return "en", 0.0
        language, probability = self._identifier.classify(text[:2000])
        return str(language), float(probability)
