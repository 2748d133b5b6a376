"""The gateway's HTTP machinery: ASGI middleware, HTTP/1.1 protocol, body reading, docs, metrics server."""
