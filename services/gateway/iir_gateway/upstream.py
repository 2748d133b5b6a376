"""Calls OpenAI-compatible upstreams over pooled keep-alive connections and relays their answers.

Failures map to OpenAI errors: unreachable or 5xx → 502, timeout → 504, 4xx passed through.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import anyio
import orjson
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from iir_gateway.errors import APIError, error_body
from iir_gateway.metrics import GatewayMetrics
from iir_gateway.providers.base import Upstream
from iir_gateway.settings import GatewaySettings
from iir_gateway.usage_tap import UsageTap

log = logging.getLogger(__name__)

_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}

# Called exactly once when an answer ends: its `usage` object (None when it had none), and whether it
# completed (False when the upstream broke off or the client went away).
OnDone = Callable[[dict[str, Any] | None, bool], None]


class DisconnectAwareStreamingResponse(StreamingResponse):
    """Stops streaming (and so closes the upstream call) as soon as the client goes away.

    `on_close` runs however the response ends, even when the client left before the first chunk and
    the body iterator never started (its own `finally` would then never run).
    """

    def __init__(self, content: AsyncIterator[bytes], on_close: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:
                async def stream_then_cancel() -> None:
                    try:
                        await self.stream_response(send)
                    except OSError:
                        pass
                    group.cancel_scope.cancel()

                group.start_soon(stream_then_cancel)
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()
        finally:
            self.on_close()

    async def listen_for_disconnect(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass


def _upstream_message(raw: bytes) -> str:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:500].decode(errors="replace").strip() or "no body"
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if data.get("message"):
            return str(data["message"])
    return raw[:500].decode(errors="replace")


class UpstreamClient:
    def __init__(self, settings: GatewaySettings, metrics: GatewayMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(total=settings.upstream_total_timeout_s,
                                              sock_connect=settings.upstream_connect_timeout_s,
                                              sock_read=settings.upstream_read_timeout_s)
        self._stream_timeout = aiohttp.ClientTimeout(total=None,
                                                     sock_connect=settings.upstream_connect_timeout_s,
                                                     sock_read=settings.upstream_read_timeout_s)

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60)
        # Bodies are relayed as bytes, so upstreams must not compress them: no Accept-Encoding is sent.
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                              skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _fail(self, provider: str, kind: str, status: int, message: str, code: str) -> APIError:
        self.metrics.upstream_errors.labels(provider, kind).inc()
        return APIError(status, message, code=code)

    async def forward(self, provider: str, upstream: Upstream, path: str, body: bytes, *, stream: bool,
                      request_id: str, public_model: str, on_done: OnDone, strip_usage: bool = False) -> Response:
        """POSTs `body` to `upstream` and relays the answer (a stream when `stream`); `on_done` gets its usage."""
        assert self._session is not None, "UpstreamClient.start() was not awaited"
        headers = {"content-type": "application/json", "x-request-id": request_id, **upstream.headers}
        url = f"{upstream.base_url}/{path}"
        try:
            resp = await self._session.post(url, data=body, headers=headers,
                                            timeout=self._stream_timeout if stream else self._timeout)
            if resp.status != 200 or not stream:
                raw = await resp.read()
                resp.release()
        except TimeoutError:
            raise self._fail(provider, "timeout", 504, f"The upstream for `{public_model}` timed out.",
                             "upstream_timeout") from None
        except aiohttp.ClientConnectorError as exc:
            log.warning("upstream unreachable", extra={"url": url, "error": str(exc)})
            raise self._fail(provider, "connect", 502, f"The upstream for `{public_model}` is unreachable.",
                             "upstream_unreachable") from None
        except aiohttp.ClientError as exc:
            log.warning("upstream failed", extra={"url": url, "error": repr(exc)})
            raise self._fail(provider, "protocol", 502, f"The upstream for `{public_model}` failed: "
                             f"{type(exc).__name__}.", "upstream_error") from None

        answer_headers = {"x-iir-model": public_model}
        if resp.status >= 500:
            raise self._fail(provider, f"http_{resp.status}", 502, f"The upstream for `{public_model}` "
                             f"answered {resp.status}: {_upstream_message(raw)}", "upstream_error")
        if resp.status != 200:
            # Client errors are the caller's to fix: pass status and message through.
            return Response(error_body(resp.status, _upstream_message(raw), code="upstream_rejected"),
                            status_code=resp.status, media_type="application/json", headers=answer_headers)
        if not stream:
            try:
                usage = orjson.loads(raw).get("usage")
            except (orjson.JSONDecodeError, AttributeError):
                usage = None
            on_done(usage if isinstance(usage, dict) else None, True)
            return Response(raw, media_type="application/json", headers=answer_headers)
        relay = StreamRelay(resp, provider, public_model, on_done, strip_usage, self.metrics)
        return DisconnectAwareStreamingResponse(relay.chunks(), on_close=lambda: relay.close(False),
                                                media_type="text/event-stream",
                                                headers={**_SSE_HEADERS, **answer_headers})


class StreamRelay:
    """Relays an upstream SSE stream chunk by chunk, reading its usage; `close` runs exactly once."""

    def __init__(self, resp: aiohttp.ClientResponse, provider: str, public_model: str, on_done: OnDone,
                 strip_usage: bool, metrics: GatewayMetrics) -> None:
        self.resp = resp
        self.provider = provider
        self.public_model = public_model
        self.on_done = on_done
        self.tap = UsageTap(strip_usage)
        self.metrics = metrics
        self.closed = False

    async def chunks(self) -> AsyncIterator[bytes]:
        completed = False
        try:
            async for chunk in self.resp.content.iter_any():
                out = self.tap.feed(chunk)
                if out:
                    yield out
            tail = self.tap.flush()
            if tail:
                yield tail
            completed = True
        except (TimeoutError, aiohttp.ClientError) as exc:
            kind = "timeout" if isinstance(exc, TimeoutError) else "protocol"
            self.metrics.upstream_errors.labels(self.provider, kind).inc()
            log.warning("upstream stream broke", extra={"model": self.public_model, "error": repr(exc)})
            status, code = (504, "upstream_timeout") if kind == "timeout" else (502, "upstream_error")
            yield b"data: " + error_body(status, f"The upstream stream for `{self.public_model}` broke off.",
                                         code=code) + b"\n\n"
        finally:
            self.close(completed)

    def close(self, completed: bool) -> None:
        if self.closed:
            return
        self.closed = True
        self.on_done(self.tap.usage, completed)
        if completed:
            self.resp.release()
        else:
            self.resp.close()  # drops the connection, which makes vLLM abort the request
