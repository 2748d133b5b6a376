"""Endpoint picking plugins, one folder each."""
