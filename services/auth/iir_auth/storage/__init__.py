"""PostgreSQL storage of the auth service."""
