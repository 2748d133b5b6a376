"""A stand-in for a plain Kubernetes Service in front of vLLM replicas: each request goes to a replica chosen
uniformly at random, its answer streamed back as it comes (kube-proxy's iptables mode picks per connection;
per request is the same spread for clients that open a connection per request, and fairer for those that
keep one).
Usage: python bench/fleet_random_proxy.py PORT URL [URL ...]
"""

from __future__ import annotations

import random
import sys

import aiohttp
from aiohttp import web

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


def make_app(upstreams: list[str]) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    client: dict[str, aiohttp.ClientSession] = {}

    async def start(_: web.Application) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
        client["s"] = aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0))

    async def stop(_: web.Application) -> None:
        await client["s"].close()

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def forward(request: web.Request) -> web.StreamResponse:
        url = f"{random.choice(upstreams)}{request.rel_url}"
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        async with client["s"].request(request.method, url, data=body, headers=headers) as upstream:
            resp = web.StreamResponse(status=upstream.status)
            for k, v in upstream.headers.items():
                if k.lower() not in HOP_BY_HOP:
                    resp.headers[k] = v
            await resp.prepare(request)
            async for chunk in upstream.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_get("/health", health)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main() -> None:
    port, upstreams = int(sys.argv[1]), sys.argv[2:]
    web.run_app(make_app(upstreams), host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
