"""Async jobs: inference requests queued in Redis streams and run by workers in the gateway processes."""
