"""Calls upstreams over pooled keep-alive connections and relays their answers in OpenAI's format.

Failures map to OpenAI errors: unreachable or 5xx → 502, timeout → 504, 429 → 429, the provider
refusing our credentials → 502, other 4xx passed through.
"""

from __future__ import annotations

import asyncio
import logging
import time
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
from iir_gateway.providers.config import Timeouts
from iir_gateway.settings import GatewaySettings
from iir_gateway.upstream_span import end_span, upstream_span
from iir_gateway.usage_tap import UsageTap
from iir_gateway.wire.anthropic_request import to_anthropic
from iir_gateway.wire.anthropic_response import from_anthropic
from iir_gateway.wire.anthropic_stream import AnthropicStreamTranslator

log = logging.getLogger(__name__)

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}

# Called exactly once when an answer ends: its `usage` object (None when it had none), and whether it
# completed (False when the upstream broke off or the client went away).
OnDone = Callable[[dict[str, Any] | None, bool], None]


_TEXT_MARKS = (b'"content":"', b'"text":"', b'"reasoning_content":"', b'"reasoning":"', b'"arguments":"')
_EMPTY_MARKS = (b'"content":""', b'"text":""', b'"reasoning_content":""', b'"reasoning":""', b'"arguments":""')


def _text_events(data: bytes) -> int:
    """How many non-empty text fields (content, text, reasoning, tool arguments) `data` carries."""
    return sum(data.count(m) for m in _TEXT_MARKS) - sum(data.count(m) for m in _EMPTY_MARKS)


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


class UpstreamError(APIError):
    """An upstream call that failed; `retryable` when trying again is safe (nothing was generated)."""

    def __init__(
        self, status: int, message: str, code: str, retryable: bool, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status, message, code=code, headers=headers)
        self.retryable = retryable


class UpstreamClient:
    def __init__(self, settings: GatewaySettings, metrics: GatewayMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._session: aiohttp.ClientSession | None = None
        self.defaults = Timeouts(
            connect_s=settings.upstream_connect_timeout_s,
            first_token_s=settings.upstream_first_token_timeout_s,
            read_s=settings.upstream_read_timeout_s,
            total_s=settings.upstream_total_timeout_s,
        )
        self._client_timeouts: dict[Timeouts, tuple[aiohttp.ClientTimeout, aiohttp.ClientTimeout]] = {}

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60)
        # Bodies are relayed as bytes, so upstreams must not compress them: no Accept-Encoding is sent.
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept")
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _timeouts(self, timeouts: Timeouts) -> tuple[aiohttp.ClientTimeout, aiohttp.ClientTimeout]:
        """(non-streaming, streaming) aiohttp timeouts; a stream's first token and chunks are timed by the relay."""
        pair = self._client_timeouts.get(timeouts)
        if pair is None:
            pair = self._client_timeouts[timeouts] = (
                aiohttp.ClientTimeout(
                    total=timeouts.total_s, sock_connect=timeouts.connect_s, sock_read=timeouts.read_s
                ),
                aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect_s),
            )
        return pair

    def _fail(
        self,
        provider: str,
        kind: str,
        status: int,
        message: str,
        code: str,
        retryable: bool,
        headers: dict[str, str] | None = None,
    ) -> UpstreamError:
        self.metrics.upstream_errors.labels(provider, kind).inc()
        return UpstreamError(status, message, code, retryable, headers)

    def _request(self, upstream: Upstream, path: str, body: dict[str, Any]) -> tuple[str, bytes]:
        if upstream.wire == "anthropic":
            if path != "chat/completions":
                raise APIError(
                    400,
                    f"`{upstream.public_model}` (Anthropic) supports only /v1/chat/completions.",
                    code="unsupported_endpoint",
                )
            return f"{upstream.base_url}/v1/messages", orjson.dumps(to_anthropic(body))
        return f"{upstream.base_url}/{path}", orjson.dumps(body)

    async def forward(
        self,
        provider: str,
        upstream: Upstream,
        path: str,
        body: dict[str, Any],
        *,
        stream: bool,
        request_id: str,
        on_done: OnDone,
        strip_usage: bool = False,
    ) -> Response:
        """POSTs `body` to `upstream` (translated to its wire format) and relays the answer as OpenAI's.

        Raises `UpstreamError` for what a retry or a fallback may fix; an upstream 4xx is passed through.
        """
        assert self._session is not None, "UpstreamClient.start() was not awaited"
        public_model = upstream.public_model
        url, payload = self._request(upstream, path, body)
        headers = {"content-type": "application/json", "x-request-id": request_id, **upstream.headers}
        span = upstream_span(provider, upstream, url, headers)
        timeouts = upstream.timeouts or self.defaults
        unary_timeout, stream_timeout = self._timeouts(timeouts)
        first = b""
        started = time.perf_counter()
        try:
            if stream:
                async with asyncio.timeout(timeouts.first_token_s):
                    resp = await self._session.post(url, data=payload, headers=headers, timeout=stream_timeout)
                    if resp.status == 200:
                        first = await resp.content.readany()
            else:
                resp = await self._session.post(url, data=payload, headers=headers, timeout=unary_timeout)
            if resp.status != 200 or not stream:
                raw = await resp.read()
                resp.release()
        except TimeoutError:
            end_span(span, 504)
            raise self._fail(
                provider,
                "timeout",
                504,
                f"The upstream for `{public_model}` timed out.",
                "upstream_timeout",
                retryable=False,
            ) from None
        except aiohttp.ClientConnectorError as exc:
            end_span(span, 502)
            log.warning("upstream unreachable", extra={"url": url, "error": str(exc)})
            raise self._fail(
                provider,
                "connect",
                502,
                f"The upstream for `{public_model}` is unreachable.",
                "upstream_unreachable",
                retryable=True,
            ) from None
        except aiohttp.ClientError as exc:
            end_span(span, 502)
            log.warning("upstream failed", extra={"url": url, "error": repr(exc)})
            raise self._fail(
                provider,
                "protocol",
                502,
                f"The upstream for `{public_model}` failed: {type(exc).__name__}.",
                "upstream_error",
                retryable=False,
            ) from None

        end_span(span, resp.status)
        answer_headers = {"x-iir-model": public_model}
        if resp.status != 200:
            raise self._status_error(provider, resp, raw, public_model, answer_headers)
        if not stream:
            try:
                answer = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise self._fail(
                    provider,
                    "protocol",
                    502,
                    f"The upstream for `{public_model}` answered with a body that is not JSON.",
                    "upstream_error",
                    retryable=False,
                ) from None
            if upstream.wire == "anthropic":
                answer = from_anthropic(answer)
                raw = orjson.dumps(answer)
            usage = answer.get("usage") if isinstance(answer, dict) else None
            on_done(usage if isinstance(usage, dict) else None, True)
            return Response(raw, media_type="application/json", headers=answer_headers)
        if not first:
            resp.close()
            raise self._fail(
                provider,
                "protocol",
                502,
                f"The upstream for `{public_model}` closed the stream before sending anything.",
                "upstream_error",
                retryable=True,
            )
        transform = (
            AnthropicStreamTranslator(not strip_usage) if upstream.wire == "anthropic" else UsageTap(strip_usage)
        )
        self.metrics.ttft.labels(upstream.metric_model).observe(time.perf_counter() - started)
        relay = StreamRelay(
            resp,
            first,
            transform,
            timeouts.read_s,
            provider,
            public_model,
            on_done,
            self.metrics,
            upstream.metric_model,
        )
        return DisconnectAwareStreamingResponse(
            relay.chunks(),
            on_close=lambda: relay.close(False),
            media_type="text/event-stream",
            headers={**SSE_HEADERS, **answer_headers},
        )

    def _status_error(
        self, provider: str, resp: aiohttp.ClientResponse, raw: bytes, public_model: str, answer_headers: dict[str, str]
    ) -> APIError:
        message = _upstream_message(raw)
        if resp.status >= 500:
            return self._fail(
                provider,
                f"http_{resp.status}",
                502,
                f"The upstream for `{public_model}` answered {resp.status}: {message}",
                "upstream_error",
                retryable=True,
            )
        if resp.status == 429:
            retry_after = {"retry-after": resp.headers["retry-after"]} if "retry-after" in resp.headers else {}
            return self._fail(
                provider,
                "http_429",
                429,
                f"The upstream for `{public_model}` is rate limiting: {message}",
                "upstream_rate_limited",
                retryable=True,
                headers={**answer_headers, **retry_after},
            )
        if resp.status in (401, 403):
            # The gateway's own credentials were refused: not the caller's to fix.
            return self._fail(
                provider,
                f"http_{resp.status}",
                502,
                f"The provider for `{public_model}` refused the gateway's credentials ({resp.status}): {message}",
                "upstream_auth_failed",
                retryable=False,
            )
        # Other client errors are the caller's to fix: pass status and message through.
        return APIError(resp.status, message, code="upstream_rejected", headers=answer_headers)


class StreamRelay:
    """Relays an upstream SSE stream chunk by chunk through `transform`, reading its usage; `close` runs once."""

    def __init__(
        self,
        resp: aiohttp.ClientResponse,
        first: bytes,
        transform: UsageTap | AnthropicStreamTranslator,
        read_timeout_s: float,
        provider: str,
        public_model: str,
        on_done: OnDone,
        metrics: GatewayMetrics,
        metric_model: str,
    ) -> None:
        self.resp = resp
        self.first = first
        self.transform = transform
        self.read_timeout_s = read_timeout_s
        self.provider = provider
        self.public_model = public_model
        self.metric_model = metric_model
        self.on_done = on_done
        self.metrics = metrics
        self.closed = False
        # Events carrying generated text: the completion tokens of a stream cut before its usage chunk
        # (vLLM sends about one token per event).
        self.text_events = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        completed = False
        content = self.resp.content
        first_at, count = time.perf_counter(), 0
        try:
            chunk = self.first
            while chunk:
                count += 1
                out = self.transform.feed(chunk)
                if out:
                    self.text_events += _text_events(out)
                    yield out
                async with asyncio.timeout(self.read_timeout_s):
                    chunk = await content.readany()
            if count > 1:
                self.metrics.itl.labels(self.metric_model).observe((time.perf_counter() - first_at) / (count - 1))
            tail = self.transform.flush()
            if tail:
                yield tail
            completed = True
        except (TimeoutError, aiohttp.ClientError) as exc:
            kind = "timeout" if isinstance(exc, TimeoutError) else "protocol"
            self.metrics.upstream_errors.labels(self.provider, kind).inc()
            log.warning("upstream stream broke", extra={"model": self.public_model, "error": repr(exc)})
            status, code = (504, "upstream_timeout") if kind == "timeout" else (502, "upstream_error")
            yield (
                b"data: "
                + error_body(status, f"The upstream stream for `{self.public_model}` broke off.", code=code)
                + b"\n\n"
            )
        finally:
            self.close(completed)

    def close(self, completed: bool) -> None:
        if self.closed:
            return
        self.closed = True
        usage = self.transform.usage
        if usage is None and self.text_events:
            usage = {"completion_tokens": self.text_events}
        self.on_done(usage, completed)
        if completed:
            self.resp.release()
        else:
            self.resp.close()  # drops the connection, which makes vLLM abort the request
