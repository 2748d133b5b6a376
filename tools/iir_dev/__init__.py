"""Developer tooling: the local stack behind `make dev`, reused by the test fixtures."""
