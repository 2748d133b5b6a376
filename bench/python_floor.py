"""The least a Python proxy can cost: two proxies with none of the gateway's work (no keys, limits,
scrubbing, cache, accounting, metrics or logs), only the forwarding, for `gateway_overhead.py --floor`
to measure beside IIR and the Rust router.

- `asgi`: uvicorn (httptools + uvloop, as the gateway runs it) with a bare ASGI app that reads the body
  and sends it to the backend through the gateway's own upstream client (`HTTP11Client`), then relays
  the answer, streamed or whole.
- `raw`: no ASGI: an asyncio protocol on uvloop parsing requests with httptools and writing answers
  itself, with the same upstream client. It is the floor of the interpreter and the event loop.

Usage: python bench/python_floor.py {asgi,raw} PORT BACKEND_URL
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import httptools
import uvicorn
import uvloop

from iir_gateway.upstream.http11 import HTTP11Client

client = HTTP11Client()
BACKEND = ""


async def forward(path: str, body: bytes) -> tuple[int, str, Any]:
    resp = await client.request("POST", BACKEND + path, {"content-type": "application/json"}, body)
    return resp.status, resp.headers.get("content-type", "application/json"), resp


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    status, ctype, resp = await forward(scope["path"], b"".join(chunks))
    if ctype.startswith("text/event-stream"):
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", ctype.encode())]})
        while data := await resp.readany():
            await send({"type": "http.response.body", "body": data, "more_body": True})
        resp.release()
        await send({"type": "http.response.body", "body": b""})
        return
    data = await resp.read()
    headers = [(b"content-type", ctype.encode()), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


class RawProxy(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body, self.body = b"".join(self.body), []
        asyncio.get_running_loop().create_task(self.answer(self.url.decode(), body))

    async def answer(self, path: str, body: bytes) -> None:
        assert self.transport is not None
        status, ctype, resp = await forward(path, body)
        if ctype.startswith("text/event-stream"):
            self.transport.write(
                b"HTTP/1.1 %d OK\r\ncontent-type: %s\r\ntransfer-encoding: chunked\r\n\r\n" % (status, ctype.encode())
            )
            while data := await resp.readany():
                self.transport.write(b"%x\r\n%s\r\n" % (len(data), data))
            resp.release()
            self.transport.write(b"0\r\n\r\n")
            return
        data = await resp.read()
        self.transport.write(
            b"HTTP/1.1 %d OK\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n%s"
            % (status, ctype.encode(), len(data), data)
        )


async def serve_raw(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(RawProxy, "127.0.0.1", port, backlog=2048)
    await server.serve_forever()


def main() -> None:
    global BACKEND
    kind, port, BACKEND = sys.argv[1], int(sys.argv[2]), sys.argv[3].rstrip("/")
    if kind == "asgi":
        uvicorn.run(asgi_app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning")
    else:
        uvloop.run(serve_raw(port))


if __name__ == "__main__":
    main()
