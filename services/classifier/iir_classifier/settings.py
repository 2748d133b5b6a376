"""Classifier settings (`IIR_` environment variables)."""

from __future__ import annotations

from pathlib import Path

from iir_common.settings import IIRSettings

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "model"


class ClassifierSettings(IIRSettings):
    classifier_host: str = "127.0.0.1"
    classifier_port: int = 50053
    # Exported encoder, tokenizer and trained heads (built by `make classifier-model`).
    classifier_model_dir: Path = DEFAULT_MODEL_DIR
    classifier_threads: int = 2
    # Micro-batching: requests queued while a batch runs form the next one (up to this many); the wait
    # holds a batch's first request for company (0: a lone request waits for nobody).
    classifier_max_batch: int = 16
    classifier_batch_wait_ms: float = 0.0
