"""The lean upstream HTTP/1.1 client against a real socket server that answers the ways servers do."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from iir_gateway.upstream.http11 import HTTP11Client, Response, UpstreamConnectError, UpstreamProtocolError
from tests.waiting import eventually

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


@contextlib.asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[tuple[str, list[int]]]:
    """A server on a random port; yields its URL and the number of connections it accepted."""
    accepted: list[int] = [0]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted[0] += 1
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await handler(reader, writer)
        writer.close()

    srv = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", accepted
    finally:
        srv.close()


def idle_alive(client: HTTP11Client) -> int:
    """How many of the client's pooled idle connections it takes for alive (its private pools: what the
    client knows of a connection is the point of these tests)."""
    return sum(conn.alive for pool in client._pools.values() for conn in pool.idle)


def reading(resp: Response) -> bool:
    """Whether the client still reads the answer's connection (it pauses past its buffer threshold)."""
    transport = resp._conn.transport
    return transport is not None and transport.is_reading()


def reply(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s" % (
        len(body),
        extra,
        body,
    )


async def keep_alive_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        head, body = await read_request(reader)
        writer.write(reply(head.split(b"\r\n", 1)[0] + b"|" + body))
        await writer.drain()


async def test_keep_alive_connections_are_reused_and_the_request_is_sent_as_given() -> None:
    async with server(keep_alive_echo) as (url, accepted):
        client = HTTP11Client()
        for i in range(5):
            resp = await client.request("POST", f"{url}/v1/chat/completions", {"x-a": "b"}, b'{"n":%d}' % i)
            assert resp.status == 200
            assert resp.headers["content-type"] == "application/json"
            assert await resp.read() == b'POST /v1/chat/completions HTTP/1.1|{"n":%d}' % i
        assert accepted[0] == 1
        await client.close()


async def test_concurrent_requests_each_take_their_own_connection() -> None:
    async with server(keep_alive_echo) as (url, accepted):
        client = HTTP11Client()

        async def one(i: int) -> bytes:
            resp = await client.request("POST", f"{url}/x", {}, b"%d" % i)
            return await resp.read()

        got = await asyncio.gather(*(one(i) for i in range(20)))
        assert got == [b"POST /x HTTP/1.1|%d" % i for i in range(20)]
        assert accepted[0] <= 20
        await asyncio.gather(*(one(i) for i in range(20)))
        assert accepted[0] <= 20  # the second wave reused the first's connections
        await client.close()


async def test_chunked_answers_come_piece_by_piece() -> None:
    release = asyncio.Event()

    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"6\r\n world\r\n0\r\n\r\n")
        await writer.drain()
        await read_request(reader)  # the connection is reused
        writer.write(reply(b"again"))
        await writer.drain()

    async with server(chunked) as (url, accepted):
        client = HTTP11Client()
        resp = await client.request("POST", f"{url}/s", {}, b"{}")
        assert await resp.readany() == b"hello"
        release.set()
        assert await resp.readany() == b" world"
        assert await resp.readany() == b""
        resp.release()
        again = await client.request("POST", f"{url}/s", {}, b"{}")
        assert await again.read() == b"again"
        assert accepted[0] == 1
        await client.close()


async def test_a_body_ended_by_the_connection_closing_is_whole_and_the_connection_is_not_reused() -> None:
    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it")
        await writer.drain()

    async with server(until_close) as (url, accepted):
        client = HTTP11Client()
        for _ in range(2):
            resp = await client.request("GET", f"{url}/", {})
            assert await resp.read() == b"all of it"
        assert accepted[0] == 2
        await client.close()


async def test_an_idle_connection_the_server_closed_is_not_reused() -> None:
    async def one_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(reply(b"ok"))
        await writer.drain()  # then the handler returns and the server closes the idle connection

    async with server(one_then_close) as (url, accepted):
        client = HTTP11Client()
        assert await (await client.request("POST", url, {}, b"")).read() == b"ok"
        await eventually(lambda: idle_alive(client) == 0)  # the close reaches the client
        assert await (await client.request("POST", url, {}, b"")).read() == b"ok"
        assert accepted[0] == 2
        await client.close()


async def test_an_answer_cut_short_is_a_protocol_error() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        await writer.drain()

    async with server(cut) as (url, _):
        client = HTTP11Client()
        resp = await client.request("POST", url, {}, b"")
        with pytest.raises(UpstreamProtocolError):
            await resp.read()
        await client.close()


async def test_a_server_that_closes_before_answering_is_a_protocol_error() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async with server(hang_up) as (url, _):
        client = HTTP11Client()
        with pytest.raises(UpstreamProtocolError):
            await client.request("POST", url, {}, b"")
        await client.close()


async def test_what_is_not_http_is_a_protocol_error() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()
        await reader.read()  # the connection stays open until the client drops it

    async with server(garbage) as (url, _):
        client = HTTP11Client()
        with pytest.raises(UpstreamProtocolError):
            await client.request("POST", url, {}, b"")
        await client.close()


async def test_nobody_listening_is_a_connect_error() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    client = HTTP11Client()
    with pytest.raises(UpstreamConnectError):
        await client.request("POST", f"http://127.0.0.1:{port}/v1", {}, b"")
    with pytest.raises(UpstreamConnectError):
        await client.request("POST", "ftp://127.0.0.1/v1", {}, b"")
    await client.close()


async def test_a_header_value_with_a_line_break_is_refused_not_sent() -> None:
    async with server(keep_alive_echo) as (url, accepted):
        client = HTTP11Client()
        with pytest.raises(ValueError):
            await client.request("POST", url, {"x-request-id": "a\r\nx-injected: 1"}, b"")
        assert accepted[0] == 0
        await client.close()


async def test_a_large_answer_read_slowly_is_whole() -> None:
    big = bytes(range(256)) * 16384  # 4 MiB, past the read pause threshold

    async def large(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(reply(big))
        await writer.drain()

    async with server(large) as (url, _):
        client = HTTP11Client()
        resp = await client.request("POST", url, {}, b"")
        await eventually(lambda: not reading(resp))  # the client buffers up to its threshold, then stops reading
        assert await resp.read() == big
        await client.close()


async def test_closing_an_answer_midway_drops_the_connection() -> None:
    closed = asyncio.Event()

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            while True:
                writer.write(b"4\r\ndata\r\n")
                await writer.drain()
                await asyncio.sleep(0.01)
                if reader.at_eof():
                    break
        closed.set()

    async with server(endless) as (url, _):
        client = HTTP11Client()
        resp = await client.request("POST", url, {}, b"")
        assert await resp.readany()
        resp.close()
        await asyncio.wait_for(closed.wait(), 10)
        await client.close()
