"""Step 9: the upstream call. Sends the request to its model, retrying what is safe to retry, then to
the model's fallbacks in order.

A retry happens only when nothing was generated: a connection failure, a 429 or a 5xx before any byte
of the answer. Each attempt resolves the model again, so a local model's retry may go to another
replica. The asked model is the one Access found (`ctx.served`); a fallback is found, and the key's
access to it checked, here. The answer names the model that answered (`x-iir-model`). Streams always
ask the upstream for usage; the usage event is removed here when the client did not ask for it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from iir_gateway.answer import Answer, Event
from iir_gateway.errors import APIError
from iir_gateway.picking.session import session_of
from iir_gateway.pipeline.context import RequestContext
from iir_gateway.pipeline.step import Step
from iir_gateway.principal import Principal
from iir_gateway.providers.base import Provider, RouteRequest
from iir_gateway.providers.directory import ServedModel
from iir_gateway.upstream.errors import UpstreamError
from iir_gateway.upstream.target import Upstream
from iir_gateway.wire.base import NativeBody

log = logging.getLogger(__name__)

MAX_MODELS = 8
RELAY = "relay"  # ctx.state: the upstream's stream of a streamed answer
# Why a model may be unable to answer while its fallbacks can: missing, saturated, not ready, circuit open.
_UNAVAILABLE = (404, 429, 503)
BACKOFF_S = 0.1
MAX_BACKOFF_S = 2.0


class Directory(Protocol):
    def find(self, model: str) -> ServedModel:
        """A public model name, parsed; APIError 404 for a name no provider serves."""
        ...


class Forwarder(Protocol):
    async def forward(
        self,
        provider: str,
        upstream: Upstream,
        operation: str,
        body: Mapping[str, Any],
        *,
        stream: bool,
        request_id: str,
        native: NativeBody | None = None,
        native_answer: bool = False,
    ) -> Answer:
        """The upstream's answer in OpenAI's format; UpstreamError for what a retry may fix. `native`:
        sent instead of `body` to an upstream of its format; `native_answer`: its events then keep the
        upstream's own payloads (`Event.native`)."""
        ...


def backoff(attempt: int, error: UpstreamError) -> float:
    hinted = error.headers.get("retry-after", "")
    if hinted.replace(".", "", 1).isdigit():
        return min(float(hinted), MAX_BACKOFF_S)
    return float(min(BACKOFF_S * 2**attempt, MAX_BACKOFF_S)) * (0.5 + random.random() / 2)


class Lease:
    """One attempt's hold on its upstream (a replica's in-flight count, a circuit): released exactly once."""

    __slots__ = ("provider", "released", "upstream")

    def __init__(self, provider: Provider, upstream: Upstream) -> None:
        self.provider = provider
        self.upstream = upstream
        self.released = False

    def release(self, ok: bool | None) -> None:
        if not self.released:
            self.released = True
            self.provider.release(self.upstream, ok)


def _usage_only(event: Event) -> bool:
    data = event.json()
    return isinstance(data.get("usage"), dict) and not data.get("choices")


class Dispatch(Step):
    name = "dispatch"

    def __init__(self, directory: Directory, forwarder: Forwarder) -> None:
        self.directory = directory
        self.forwarder = forwarder

    def _served(self, ctx: RequestContext, name: str, principal: Principal, chain: list[str]) -> ServedModel:
        """The model `name`, its fallbacks added to `chain`: the asked one as Access found it, another found
        here (APIError 404) and checked (403: its own fallbacks are still tried)."""
        asked = ctx.served
        served = asked if asked is not None and asked.public == name else self.directory.find(name)
        chain += [f for f in served.fallbacks() if f not in chain]
        if served is not asked:  # Access checked the asked one
            served.check_access(principal)
        return served

    async def before(self, ctx: RequestContext) -> Answer | None:
        principal = ctx.principal
        assert principal is not None
        request = RouteRequest(ctx.body, principal.priority, session_of(ctx.headers, ctx.body, principal.key_id))
        chain = [ctx.model]
        last: APIError | None = None
        for index in range(MAX_MODELS):
            if index >= len(chain):
                break
            name = chain[index]
            served: ServedModel | None = None
            attempt = 0
            while True:
                try:
                    served = served or self._served(ctx, name, principal, chain)
                    provider = served.provider
                    upstream = await served.resolve(request)
                except APIError as exc:
                    if index == 0 and (exc.status not in _UNAVAILABLE or len(chain) == 1):
                        raise  # the caller's own model: it sees why it cannot answer
                    if index + 1 < len(chain):
                        log.info("model unavailable, trying its fallback", extra={"model": name, "error": exc.message})
                    last = last or exc
                    break
                lease = Lease(provider, upstream)
                try:
                    answer = await self.forwarder.forward(
                        provider.name,
                        upstream,
                        ctx.operation,
                        ctx.body,
                        stream=ctx.stream,
                        request_id=ctx.request_id,
                        native=ctx.native,
                        # Untouched only where nothing in the gateway may change the answer's text.
                        native_answer=ctx.native is not None and ctx.scrub_mode == "off",
                    )
                except UpstreamError as exc:
                    lease.release(None if exc.status == 429 else False)  # rate limiting is not failure
                    last = exc
                    if exc.retryable and attempt < upstream.retries:
                        await asyncio.sleep(backoff(attempt, exc))
                        attempt += 1
                        continue
                    if len(chain) > index + 1:
                        log.warning("model failed, trying its fallback", extra={"model": name, "error": exc.message})
                    break
                except APIError as exc:
                    lease.release(None if exc.status < 500 else False)  # the caller's error: not the upstream's health
                    raise
                except BaseException:
                    lease.release(False)
                    raise
                ctx.state[self.name] = lease
                ctx.tried, ctx.target = chain[:index], upstream.target or provider.name
                if answer.stream is not None:
                    ctx.ttft_s = time.perf_counter() - ctx.started
                    ctx.state[RELAY] = answer.stream  # its relayed count, for spend checkpoints
                return answer
        assert last is not None
        raise last

    def wants_chunks(self, ctx: RequestContext) -> bool:
        return not ctx.client_usage  # the usage event it asked for on the client's behalf is removed

    def on_chunk(self, ctx: RequestContext, event: Event) -> Sequence[Event]:
        return () if b'"usage"' in event.raw and _usage_only(event) else (event,)

    def on_chunks(self, ctx: RequestContext, events: Sequence[Event]) -> Sequence[Event]:
        # The usage event comes last (before [DONE]): only the last two are looked at.
        tail = len(events) - 2
        if not any(b'"usage"' in e.raw for e in events[-2:]):
            return events
        return [e for i, e in enumerate(events) if i < tail or not (b'"usage"' in e.raw and _usage_only(e))]

    def on_complete(self, ctx: RequestContext) -> None:
        lease = ctx.state.get(self.name)
        if lease is not None:
            lease.release(ctx.ok)
