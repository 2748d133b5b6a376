"""Registry service: the model catalogue, served over gRPC with a streaming Watch."""
