"""Clients that send half a request, or open too many connections, cannot hold the gateway's sockets."""

from __future__ import annotations

import asyncio
import time

from iir_dev.stack import Stack
from tests.security.conftest import chart_gateway_env

HEADER_TIMEOUT_S = 10.0  # the gateway's default, which the chart keeps
BODY_TIMEOUT_S = 30.0
PER_CLIENT = 100
# Only a guard against a server that never closes: every connection here is closed by the server, so
# the waits end as it does, however loaded the machine.
HANG_GUARD_S = BODY_TIMEOUT_S + 60


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes | None:
    """What the server sent before closing, or None if it kept the connection open."""
    try:
        return await asyncio.wait_for(reader.read(), seconds)
    except TimeoutError:
        return None


async def _slow(port: int, source: str, payload: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(payload)
    await writer.drain()
    return reader, writer


async def _attack(port: int, key: str) -> dict[str, list[bytes | None]]:
    headers = [
        await _slow(port, f"127.0.1.{i % 50 + 1}", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        for i in range(500)
    ]
    bodies = [
        await _slow(
            port,
            f"127.0.2.{i % 50 + 1}",
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + key.encode() + b"\r\n"
            b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"model":',
        )
        for i in range(500)
    ]
    crowd = [await _slow(port, "127.0.3.1", b"") for _ in range(PER_CLIENT + 20)]
    crowd_replies = await asyncio.gather(*(_closed_within(r, HANG_GUARD_S) for r, _ in crowd))
    header_replies = await asyncio.gather(*(_closed_within(r, HANG_GUARD_S) for r, _ in headers))
    body_replies = await asyncio.gather(*(_closed_within(r, HANG_GUARD_S) for r, _ in bodies))
    for _, w in headers + bodies + crowd:
        w.close()
    return {"headers": header_replies, "bodies": body_replies, "crowd": crowd_replies}


def test_unfinished_requests_are_answered_408_and_closed(chart_stack: Stack) -> None:
    env = chart_gateway_env()
    assert "IIR_HEADER_TIMEOUT_S" not in env and "IIR_BODY_TIMEOUT_S" not in env  # the defaults below apply
    started = time.monotonic()
    got = asyncio.run(_attack(chart_stack.ports.gateway, chart_stack.create_key("slow")))
    assert time.monotonic() - started >= BODY_TIMEOUT_S  # the deadlines, not something sooner, closed them
    assert all(r is not None and r.startswith(b"HTTP/1.1 408") for r in got["headers"]), got["headers"][:3]
    assert all(r is not None and r.startswith(b"HTTP/1.1 408") for r in got["bodies"]), got["bodies"][:3]
    # Past the cap, connections from one address are closed at once, with no answer; the first PER_CLIENT
    # stay open until their header deadline answers them 408.
    assert got["crowd"].count(b"") == 20, got["crowd"]
    assert sum(r is not None and r.startswith(b"HTTP/1.1 408") for r in got["crowd"]) == PER_CLIENT
