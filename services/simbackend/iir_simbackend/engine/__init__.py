"""A model of vLLM's engine on a GPU (docs/simulated-fleet.md): continuous batching with chunked prefill,
automatic prefix caching in hashed blocks with LRU eviction, preemption, step times calibrated to one
model on one GPU, vLLM's metrics and its KV events."""
