"""Helpers shared by every IIR service: logging, settings, gRPC serving. Nothing service-specific."""

__version__ = "0.1.0"
