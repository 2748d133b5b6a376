"""Classifier settings (`IIR_` environment variables)."""

from __future__ import annotations

from iir_common.settings import IIRSettings


class ClassifierSettings(IIRSettings):
    classifier_host: str = "127.0.0.1"
    classifier_port: int = 50053
