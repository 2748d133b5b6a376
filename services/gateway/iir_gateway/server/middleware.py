"""Pure ASGI middleware: request id, client address, body-size guard, security headers, access log, HTTP
metrics, last-resort 500."""

from __future__ import annotations

import itertools
import logging
import os
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from iir_common.logging import request_id_var
from iir_gateway.errors import ANTHROPIC_ROUTES, anthropic_error_body, error_body
from iir_gateway.metrics import GatewayMetrics
from iir_gateway.request_ids import valid_request_id
from iir_gateway.server.access_log import AccessLog
from iir_gateway.server.client_address import ClientAddressResolver

log = logging.getLogger(__name__)
# Request ids: a random per-process prefix and a counter; unique, and far cheaper than uuid4.
_RID_PREFIX = os.urandom(6).hex().encode() + b"-"
_rid_counter = itertools.count(1)
# On every answer: no MIME sniffing, no framing, no referrer, nothing cached by shared caches.
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
)


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        metrics: GatewayMetrics,
        max_body_bytes: int,
        access_log: AccessLog | None,
        addresses: ClientAddressResolver,
        upload_max_bytes: int = 0,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.upload_max_bytes = max(upload_max_bytes, max_body_bytes)
        self.access_log = access_log
        self.addresses = addresses

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":  # the client, as for HTTP: resolved through trusted proxies
                self._resolve_client(scope)
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        rid = b""
        length = None
        credentials = 0
        for name, value in scope["headers"]:
            if name == b"x-request-id" and valid_request_id(value):
                rid = value
            elif name == b"content-length":
                length = value
            elif name == b"authorization" or name == b"x-api-key":
                credentials += 1
        self._resolve_client(scope)
        if not rid:
            rid = _RID_PREFIX + b"%x" % next(_rid_counter)
        token = request_id_var.set(rid.decode())
        status = 500
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid), *SECURITY_HEADERS]
            await send(message)

        try:
            limit = self.upload_max_bytes if scope["path"] == "/v1/files" else self.max_body_bytes
            if length is not None and (not length.isdigit() or int(length) > limit):
                await self._reply(
                    send_wrapper,
                    413,
                    f"Request body too large: the limit is {limit} bytes.",
                    "request_too_large",
                    scope["path"],
                )
            elif credentials > 1:  # proxies and frameworks disagree on which of several counts: refuse
                await self._reply(
                    send_wrapper,
                    400,
                    "Send one API key, in one `Authorization` or `X-API-Key` header.",
                    "duplicate_credentials",
                    scope["path"],
                )
            else:
                await self.app(scope, receive, send_wrapper)
        except Exception:
            log.exception("unhandled error", extra={"path": scope["path"]})
            if not started:
                await self._reply(
                    send_wrapper,
                    500,
                    "The server had an error while processing your request.",
                    "internal_error",
                    scope["path"],
                )
        finally:
            elapsed = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route).observe(elapsed)
            if self.access_log is not None:
                self.access_log.record(rid.decode(), scope["method"], scope["path"], status, round(elapsed * 1000, 3))
            request_id_var.reset(token)

    def _resolve_client(self, scope: Scope) -> None:
        """The TCP peer stays in `iir.peer`; `client` becomes the address resolved through trusted proxies."""
        client = scope.get("client")
        peer = client[0] if client else ""
        scope["iir.peer"] = peer
        if self.addresses.proxies:
            scope["client"] = (self.addresses.resolve(peer, scope["headers"]), client[1] if client else 0)

    @staticmethod
    async def _reply(send: Send, status: int, message: str, code: str, path: str = "") -> None:
        # Anthropic's clients get Anthropic's error shape on Anthropic's routes.
        body = (
            anthropic_error_body(status, message)
            if path.startswith(ANTHROPIC_ROUTES)
            else error_body(status, message, code=code)
        )
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
