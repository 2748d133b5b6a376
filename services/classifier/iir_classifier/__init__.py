"""Classifier service: what kind of work a prompt is, for `model: "auto"` routing."""
