"""A lean HTTP/1.1 client for upstream calls: pooled keep-alive connections over asyncio protocols,
responses parsed by httptools (llhttp, the parser uvicorn uses).

It does what the gateway needs and nothing more: one POST or GET at a time per connection, a body
given as bytes, Content-Length or chunked answers read whole or as they come. Per request it allocates
the request's bytes, a response and its buffer; no session, timeout or header objects. aiohttp cost
about a quarter of the gateway's CPU per request (docs/ARCHITECTURE.md, Performance).

A connection goes back to its pool only when its answer was read to the end and the server did not
ask to close it. An idle connection the server closed is known dead (`connection_lost`) and never
reused, so a request is never sent on a connection already gone.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from urllib.parse import urlsplit

import httptools

# Idle connections older than this are not reused (servers close theirs after 5 s to minutes).
IDLE_TTL_S = 55.0
MAX_IDLE_PER_HOST = 512
# Past this much unread body the socket stops being read (a slow client of a fast upstream).
HIGH_WATER = 1 << 20


class UpstreamConnectError(OSError):
    """The connection could not be made: nothing was sent."""


class UpstreamProtocolError(OSError):
    """The connection broke or the answer was not valid HTTP."""


class _Connection(asyncio.Protocol):
    __slots__ = (
        "_body",
        "_buffered",
        "_complete",
        "_error",
        "_headers",
        "_headers_done",
        "_loop",
        "_parser",
        "_paused",
        "_waiter",
        "alive",
        "idle_since",
        "keep_alive",
        "status",
        "transport",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.alive = True
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.keep_alive = True
        self._headers: list[tuple[bytes, bytes]] = []
        self._headers_done = False
        self._complete = False
        self._body: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamProtocolError("the upstream switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(UpstreamProtocolError(f"invalid HTTP from the upstream: {exc}"))

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        if self._headers_done and not self._complete and self._no_length():
            self._complete = True  # a body delimited by the connection's end
        elif not self._complete:
            self._error = self._error or UpstreamProtocolError(f"the upstream closed the connection ({exc or 'EOF'})")
        self._wake()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self.keep_alive = self._parser.should_keep_alive()
        self._headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:  # once per chunk of a chunked answer: per token of a stream
        self._body.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_message_complete(self) -> None:
        self._complete = True
        self._wake()

    # helpers
    def _no_length(self) -> bool:
        for name, value in self._headers:
            lower = name.lower()
            if lower == b"content-length" or (lower == b"transfer-encoding" and b"chunked" in value.lower()):
                return False
        return True

    def _fail(self, exc: BaseException) -> None:
        self._error = exc
        self.alive = False
        if self.transport is not None:
            self.transport.close()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self._reset()
        self.transport.write(data)

    async def headers(self) -> None:
        while not self._headers_done:
            if self._error is not None:
                raise self._error
            await self._wait()

    async def chunk(self) -> bytes:
        """The next piece of the body; b"" at its end."""
        while not self._body:
            if self._complete:
                return b""
            if self._error is not None:
                raise self._error
            await self._wait()
        if len(self._body) == 1:
            data = self._body.popleft()
        else:
            data = b"".join(self._body)
            self._body.clear()
        self._buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    def close(self) -> None:
        self.alive = False
        if self.transport is not None:
            self.transport.close()


class Response:
    """An answer's status, headers and body, read whole (`read`) or as it comes (`readany`)."""

    __slots__ = ("_conn", "_pool", "_released", "headers", "status")

    def __init__(self, pool: _HostPool, conn: _Connection) -> None:
        self._pool = pool
        self._conn = conn
        self._released = False
        self.status = conn.status
        self.headers: dict[str, str] = {n.decode("latin-1").lower(): v.decode("latin-1") for n, v in conn._headers}

    async def readany(self) -> bytes:
        return await self._conn.chunk()

    async def read(self) -> bytes:
        parts = []
        while True:
            data = await self._conn.chunk()
            if not data:
                break
            parts.append(data)
        self.release()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def fail(self, exc: BaseException) -> None:
        """Breaks off the answer: a read waiting (or the next) raises `exc`, and the connection is dropped."""
        self._released = True
        self._conn._fail(exc)

    def release(self) -> None:
        """Ends the exchange: the connection is reused when its answer was read whole, else dropped."""
        if self._released:
            return
        self._released = True
        conn = self._conn
        if conn._complete and conn.keep_alive and conn.alive and not conn._body:
            self._pool.put(conn)
        else:
            conn.close()

    def close(self) -> None:
        """Drops the connection (an answer not read to its end: the upstream sees the client leave)."""
        if not self._released:
            self._released = True
            self._conn.close()


class _HostPool:
    __slots__ = ("host", "host_header", "idle", "port", "ssl")

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None, host_header: bytes) -> None:
        self.host, self.port, self.ssl, self.host_header = host, port, tls, host_header
        self.idle: deque[_Connection] = deque()

    def take(self) -> _Connection | None:
        now = time.monotonic()
        idle = self.idle
        while idle:
            conn = idle.pop()  # the most recently used: the likeliest to be alive
            if conn.alive and now - conn.idle_since < IDLE_TTL_S:
                return conn
            conn.close()
        return None

    def put(self, conn: _Connection) -> None:
        if len(self.idle) >= MAX_IDLE_PER_HOST:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self.idle.append(conn)


def _check(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError("a header value holds a line break")
    return value


class HTTP11Client:
    """Pools of keep-alive connections, one per scheme, host and port."""

    def __init__(self) -> None:
        self._pools: dict[tuple[str, str, int], _HostPool] = {}
        self._tls: ssl.SSLContext | None = None
        # The request line and Host of each URL prefix, encoded once.
        self._prefixes: dict[str, tuple[_HostPool, bytes]] = {}

    def _target(self, url: str) -> tuple[_HostPool, bytes]:
        cached = self._prefixes.get(url)
        if cached is not None:
            return cached
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamConnectError(f"not an http(s) URL: {url}")
        tls = None
        if parts.scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        port = parts.port or (443 if tls else 80)
        key = (parts.scheme, parts.hostname, port)
        pool = self._pools.get(key)
        if pool is None:
            default = port == (443 if tls else 80)
            netloc = parts.hostname if default else f"{parts.hostname}:{port}"
            if ":" in parts.hostname and not default:
                netloc = f"[{parts.hostname}]:{port}"
            pool = self._pools[key] = _HostPool(parts.hostname, port, tls, netloc.encode("idna"))
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        target = (pool, _check(path).encode("latin-1"))
        if len(self._prefixes) < 4096:  # URLs come from the catalogue: a bounded set
            self._prefixes[url] = target
        return target

    async def _connect(self, pool: _HostPool, timeout_s: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout_s):
                _, conn = await loop.create_connection(lambda: _Connection(loop), pool.host, pool.port, ssl=pool.ssl)
        except TimeoutError:
            raise UpstreamConnectError(f"connecting to {pool.host}:{pool.port} timed out") from None
        except OSError as exc:  # refused, unreachable, DNS, TLS
            raise UpstreamConnectError(f"cannot connect to {pool.host}:{pool.port}: {exc}") from None
        return conn

    async def request(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes = b"",
        connect_timeout_s: float = 5.0,
    ) -> Response:
        """Sends the request and returns once the answer's headers are in. Raises UpstreamConnectError
        when no connection could be made, UpstreamProtocolError when it broke."""
        pool, path = self._target(url)
        head = b"%s %s HTTP/1.1\r\nhost: %s\r\ncontent-length: %d\r\n"
        lines = [head % (method.encode(), path, pool.host_header, len(body))]
        for name, value in headers.items():
            lines.append(b"%s: %s\r\n" % (_check(name).encode("latin-1"), _check(value).encode("latin-1")))
        lines.append(b"\r\n")
        lines.append(body)
        data = b"".join(lines)
        conn = pool.take()
        if conn is None:
            conn = await self._connect(pool, connect_timeout_s)
        try:
            conn.send(data)
            await conn.headers()
        except BaseException:
            conn.close()
            raise
        return Response(pool, conn)

    async def close(self) -> None:
        for pool in self._pools.values():
            while pool.idle:
                pool.idle.pop().close()
        self._pools.clear()
        self._prefixes.clear()
