"""The inference edge: the route table, the one entry into the pipeline, and the routes of each API."""
