"""Auth service: API keys (hashed, PostgreSQL), scopes, limits. Served over gRPC."""
