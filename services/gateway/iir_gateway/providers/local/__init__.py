"""The local provider: vLLM replicas from the registry's catalogue, picked per request, woken from zero."""
