"""What the fake APIs share: a request log, per-model call counters, and a `python -m` runner."""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

from aiohttp import web

CALLS = web.AppKey("calls", Counter[str])
LAST = web.AppKey("last", dict[str, Any])


def install_introspection(app: web.Application) -> None:
    """`GET /_calls` (requests per model) and `GET /_last` (the last request body), for assertions."""
    app[CALLS] = Counter()
    app[LAST] = {}

    async def calls(request: web.Request) -> web.Response:
        counts: Counter[str] = request.app[CALLS]
        return web.json_response(dict(counts))

    async def last(request: web.Request) -> web.Response:
        return web.json_response(request.app[LAST])

    app.router.add_get("/_calls", calls)
    app.router.add_get("/_last", last)


def record(request: web.Request, body: dict[str, Any]) -> int:
    """Counts the call for (model, user) and keeps the body; returns how many such calls came before."""
    key = f"{body.get('model')}|{body.get('user') or (body.get('metadata') or {}).get('user_id', '')}"
    request.app[LAST].clear()
    request.app[LAST].update(body)
    seen = request.app[CALLS][key]
    request.app[CALLS][key] += 1
    request.app[CALLS][str(body.get("model"))] += 1
    return seen


def words(text: str) -> int:
    return max(1, len(text.split()))


def serve(make_app: Any, description: str) -> None:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()
    web.run_app(make_app(args.key), host="127.0.0.1", port=args.port, print=None, handler_cancellation=True)
