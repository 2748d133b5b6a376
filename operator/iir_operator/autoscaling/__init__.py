"""The operator's autoscaler: vLLM's load and the gateways' held requests (from the registry) → replicas."""
