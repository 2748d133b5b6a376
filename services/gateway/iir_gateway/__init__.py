"""Gateway: the only public HTTP surface of IIR (OpenAI-compatible API, health, metrics, admin)."""
