"""An upstream's answer stream, decoded event by event as it is read (an `EventStream`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from iir_gateway.answer import Event
from iir_gateway.errors import error_body
from iir_gateway.metrics import GatewayMetrics
from iir_gateway.upstream.http11 import Response
from iir_gateway.wire.base import Framing, StreamDecoder
from iir_gateway.wire.sse import SSEParser

log = logging.getLogger(__name__)


class StreamRelay:
    """Reads `resp` (whose first bytes were read already), cut into payloads by `framing` (SSE unless
    the codec says otherwise), through `decoder`. A stream that breaks off or stalls past
    `read_timeout_s` ends with an OpenAI error event. `aclose` ends the call: a stream closed before
    its end drops the connection, which makes vLLM abort the request.

    The stall is watched by one timer per stream, which looks at how long the current read has been
    waiting when it fires (and comes back later if none has waited long): a timeout per read would
    cost a timer set and cancelled for every event."""

    def __init__(
        self,
        resp: Response,
        first: bytes,
        decoder: StreamDecoder,
        read_timeout_s: float,
        provider: str,
        public_model: str,
        metric_model: str,
        metrics: GatewayMetrics,
        framing: Framing | None = None,
    ) -> None:
        self.resp = resp
        self.decoder = decoder
        self.read_timeout_s = read_timeout_s
        self.provider = provider
        self.public_model = public_model
        self.metric_model = metric_model
        self.metrics = metrics
        self.usage: dict[str, Any] | None = None
        self.completed = False
        self._parser: Framing = framing if framing is not None else SSEParser()
        self._pending: deque[Event] = deque()
        self._next = first
        self._ended = False
        self._closed = False
        self._reads = 0
        self._first_at = time.perf_counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting_since = 0.0  # when the read now waiting began (0: none is)
        self._watchdog: asyncio.TimerHandle | None = None
        # Events relayed: the completion tokens of a stream cut before its usage event (vLLM sends about
        # one token per event; counting events, not parsing them, may count the role and finish events).
        self.text_events = 0

    def __aiter__(self) -> StreamRelay:
        return self

    async def __anext__(self) -> Event:
        while not self._pending:
            if self._ended:
                await self.aclose()
                raise StopAsyncIteration
            await self._read()
        return self._pending.popleft()

    def take_buffered(self) -> list[Event]:
        events = list(self._pending)
        self._pending.clear()
        return events

    async def _read(self) -> None:
        chunk, self._next = self._next, b""
        try:
            if not chunk:
                loop = self._loop
                if loop is None:
                    loop = self._loop = asyncio.get_running_loop()
                    self._watchdog = loop.call_later(self.read_timeout_s, self._watch)
                self._waiting_since = loop.time()
                try:
                    chunk = await self.resp.readany()
                finally:
                    self._waiting_since = 0.0
        except (TimeoutError, OSError) as exc:
            self._broke(exc)
            return
        if not chunk:
            self._decode(self._parser.flush())
            if self._reads > 1:
                self.metrics.itl.labels(self.metric_model).observe(
                    (time.perf_counter() - self._first_at) / (self._reads - 1)
                )
            self._ended = self.completed = True
            return
        self._reads += 1
        self._decode(self._parser.feed(chunk))

    def _watch(self) -> None:
        assert self._loop is not None
        waited = self._loop.time() - self._waiting_since if self._waiting_since else 0.0
        if waited >= self.read_timeout_s:
            self._watchdog = None
            self.resp.fail(TimeoutError(f"no data for {self.read_timeout_s:g}s"))
        else:
            self._watchdog = self._loop.call_later(self.read_timeout_s - waited, self._watch)

    def _decode(self, payloads: list[bytes]) -> None:
        events = self.decoder.decode_all(payloads)
        if events:
            self.text_events += len(events)
            self._pending.extend(events)

    def _broke(self, exc: BaseException) -> None:
        kind = "timeout" if isinstance(exc, TimeoutError) else "protocol"
        self.metrics.upstream_errors.labels(self.provider, kind).inc()
        log.warning("upstream stream broke", extra={"model": self.public_model, "error": repr(exc)})
        status, code = (504, "upstream_timeout") if kind == "timeout" else (502, "upstream_error")
        message = f"The upstream stream for `{self.public_model}` broke off."
        self._pending.append(Event(error_body(status, message, code=code)))
        self._ended = True

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        usage = self.decoder.usage
        if usage is None and self.text_events:
            usage = {"completion_tokens": self.text_events}
        self.usage = usage
        if self.completed:
            self.resp.release()
        else:
            self.resp.close()
