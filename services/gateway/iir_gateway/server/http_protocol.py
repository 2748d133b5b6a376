"""uvicorn's httptools protocol with the limits a public server needs: a deadline for the request
headers and one for the body, and a cap on open connections per client address.

Without them a client that sends half a request holds a socket (and its buffers) for ever.

It also sends a response's head with its first body bytes: uvicorn writes the status line and headers
on their own, which costs a second send() per answer and a TCP segment with no body in it.

uvicorn makes a protocol object per connection from what `guarded_protocol(limits)` returns; `__main__`
hands it the limits from the settings.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from iir_gateway.errors import error_body
from iir_gateway.networks import Network, in_networks
from iir_gateway.server.connection_counts import ConnectionCounts
from iir_gateway.workers import shared_dir

_BODY = error_body(408, "The request was not received in time.", code="request_timeout")
_TIMEOUT_REPLY = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY
)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The deadlines for a request's headers and then its body, and the open connections a client address
    may hold (addresses in `proxies` excepted)."""

    header_timeout_s: float
    body_timeout_s: float
    per_client: int
    proxies: tuple[Network, ...]


@functools.cache
def _open_connections() -> ConnectionCounts:
    """This process's counts of open connections per address (over all workers when they share a folder)."""
    shared = shared_dir()
    return ConnectionCounts(shared / "connections" if shared else None)


class _HeadWithBody:
    """The transport as a request cycle sees it: the response head waits for the first body bytes (or
    the end of this loop iteration), so a whole answer usually leaves in one write."""

    __slots__ = ("_held", "_loop", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._loop = loop
        self._held = b""

    def write(self, data: bytes) -> None:
        held = self._held
        if held:
            self._held = b""
            if len(data) < 65536:  # copying a small body costs less than a second send()
                self.transport.write(held + data)
            else:
                self.transport.write(held)
                self.transport.write(data)
        elif data.startswith(b"HTTP/1.1 "):  # uvicorn's status line: the start of a head
            self._held = data
            self._loop.call_soon(self.flush)
        else:
            self.transport.write(data)

    def flush(self) -> None:
        if self._held:
            held, self._held = self._held, b""
            self.transport.write(held)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """Closes connections whose headers or body do not arrive in time, and those past the per-address cap."""

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits
        self._open_connections = _open_connections()
        self._deadline: asyncio.TimerHandle | None = None
        self._peer = ""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._peer = self.client[0] if self.client else ""
        self._writer = _HeadWithBody(transport, self.loop)
        count = self._open_connections.open(self._peer)
        if count > self._limits.per_client and not in_networks(self._peer, self._limits.proxies):
            transport.close()  # connection_lost gives the slot back
            return
        self._arm(self._limits.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._open_connections.close(self._peer)
        super().connection_lost(exc)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is None or not self.cycle.response_started:
            self.transport.write(_TIMEOUT_REPLY)
        if self.cycle is not None:
            self.cycle.keep_alive = False
        self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # a keep-alive connection's next request: a new header deadline
            self._arm(self._limits.header_timeout_s)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self.cycle is not None:
            self.cycle.transport = self._writer  # type: ignore[assignment]
        self._arm(self._limits.body_timeout_s)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()


def guarded_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """What uvicorn's `http` takes: GuardedHttpToolsProtocol with `limits`. uvicorn only calls it, as it
    would the class; a partial pickles into the worker processes, where a class attribute set here would
    not follow."""
    return cast("type[asyncio.Protocol]", functools.partial(GuardedHttpToolsProtocol, limits=limits))
