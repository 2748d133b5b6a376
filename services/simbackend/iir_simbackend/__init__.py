"""A simulated vLLM OpenAI-compatible server: deterministic text, configurable token timing, vLLM metrics."""
