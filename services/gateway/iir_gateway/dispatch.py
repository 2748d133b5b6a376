"""Sends one request to its model, retrying what is safe to retry, then to the model's fallbacks in order.

A retry happens only when nothing was generated: a connection failure, a 429 or a 5xx before any byte
of the answer. Each attempt resolves the model again, so a local model's retry may go to another
replica. The answer says which model answered in its `x-iir-model` header.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from starlette.responses import Response

from iir_gateway.auth import Principal
from iir_gateway.errors import APIError
from iir_gateway.gateway import Gateway
from iir_gateway.providers.base import Provider, RouteRequest, Upstream
from iir_gateway.upstream import OnDone, UpstreamError

log = logging.getLogger(__name__)

MAX_MODELS = 8
# Why a model may be unable to answer while its fallbacks can: missing, saturated, not ready, circuit open.
_UNAVAILABLE = (404, 429, 503)
BACKOFF_S = 0.1
MAX_BACKOFF_S = 2.0


def _backoff(attempt: int, error: UpstreamError) -> float:
    hinted = error.headers.get("retry-after", "")
    if hinted.replace(".", "", 1).isdigit():
        return min(float(hinted), MAX_BACKOFF_S)
    return min(BACKOFF_S * 2**attempt, MAX_BACKOFF_S) * (0.5 + random.random() / 2)


class _Lease:
    """One attempt's hold on its upstream (a replica's in-flight count, a circuit): released exactly once."""

    def __init__(self, provider: Provider, upstream: Upstream, on_done: OnDone) -> None:
        self.provider = provider
        self.upstream = upstream
        self.on_done = on_done
        self.released = False

    def release(self, ok: bool) -> None:
        if not self.released:
            self.released = True
            self.provider.release(self.upstream, ok)

    def done(self, usage: dict[str, Any] | None, ok: bool) -> None:
        """The answer ended (a stream possibly much later): release, then account."""
        self.release(ok)
        self.on_done(usage, ok)


async def dispatch(
    gw: Gateway,
    model: str,
    principal: Principal,
    request: RouteRequest,
    path: str,
    body: dict[str, Any],
    *,
    stream: bool,
    request_id: str,
    on_done: OnDone,
    strip_usage: bool,
) -> Response:
    chain = [model]
    last: APIError | None = None
    for index in range(MAX_MODELS):
        if index >= len(chain):
            break
        name = chain[index]
        chain += [f for f in gw.fallbacks(name) if f not in chain]
        attempt = 0
        while True:
            try:
                provider, upstream = await gw.route(name, principal, request)
            except APIError as exc:
                if index == 0 and (exc.status not in _UNAVAILABLE or len(chain) == 1):
                    raise  # the caller's own model: it sees why it cannot answer
                if index + 1 < len(chain):
                    log.info("model unavailable, trying its fallback", extra={"model": name, "error": exc.message})
                last = last or exc
                break
            lease = _Lease(provider, upstream, on_done)
            body["model"] = upstream.model
            try:
                return await gw.upstream.forward(
                    provider.name,
                    upstream,
                    path,
                    body,
                    stream=stream,
                    request_id=request_id,
                    on_done=lease.done,
                    strip_usage=strip_usage,
                )
            except UpstreamError as exc:
                lease.release(False)
                last = exc
                if exc.retryable and attempt < upstream.retries:
                    await asyncio.sleep(_backoff(attempt, exc))
                    attempt += 1
                    continue
                if len(chain) > index + 1:
                    log.warning("model failed, trying its fallback", extra={"model": name, "error": exc.message})
                break
            except APIError as exc:
                lease.release(exc.status < 500)  # the caller's error says nothing of the upstream's health
                raise
            except BaseException:
                lease.release(False)
                raise
    assert last is not None
    raise last
