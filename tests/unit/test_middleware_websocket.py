"""The request middleware on a WebSocket: the client address is resolved through trusted proxies as for
HTTP (a WebSocket turn is authenticated and limited by it), and a forwarded header from anyone else is
not believed."""

from __future__ import annotations

import asyncio
from typing import Any

from iir_gateway.metrics import GatewayMetrics
from iir_gateway.server.client_address import ClientAddressResolver
from iir_gateway.server.middleware import RequestContextMiddleware


def client_seen(peer: str, proxies: str) -> tuple[str, str]:
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.update(scope)

    middleware = RequestContextMiddleware(app, GatewayMetrics(), 1024, None, ClientAddressResolver(proxies))
    scope = {
        "type": "websocket",
        "path": "/v1/responses",
        "client": (peer, 5000),
        "headers": [(b"x-forwarded-for", b"203.0.113.7")],
    }

    async def receive() -> Any:
        return {}

    async def send(message: Any) -> None:
        pass

    asyncio.run(middleware(scope, receive, send))
    return seen["client"][0], seen["iir.peer"]


def test_a_websocket_through_a_trusted_proxy_is_its_client() -> None:
    assert client_seen("10.0.0.5", "10.0.0.0/8") == ("203.0.113.7", "10.0.0.5")


def test_a_forwarded_header_from_anyone_else_is_not_believed() -> None:
    assert client_seen("198.51.100.9", "10.0.0.0/8") == ("198.51.100.9", "198.51.100.9")
