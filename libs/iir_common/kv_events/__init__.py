"""vLLM's KV-cache events on the wire, for those that speak them: the simulated engine publishes them, the
registry decodes them."""
