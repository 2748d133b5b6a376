"""Inbound protocols: the APIs clients speak to the gateway, each run through the one pipeline."""
