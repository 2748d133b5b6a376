"""Calls upstreams over pooled keep-alive connections; their answers come back in OpenAI's format.

Failures map to OpenAI errors: unreachable or 5xx → 502, timeout → 504, 429 → 429, the provider
refusing our credentials → 502, other 4xx passed through.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import orjson

from iir_gateway.answer import Answer
from iir_gateway.errors import APIError
from iir_gateway.metrics import GatewayMetrics
from iir_gateway.upstream.errors import UpstreamError, upstream_error, upstream_message
from iir_gateway.upstream.http11 import HTTP11Client, Response, UpstreamConnectError
from iir_gateway.upstream.relay import StreamRelay
from iir_gateway.upstream.span import end_span, upstream_span
from iir_gateway.upstream.target import CredentialsError, Timeouts, Upstream
from iir_gateway.wire.base import NativeBody
from iir_gateway.wire.registry import codec_for

log = logging.getLogger(__name__)


class UpstreamClient:
    def __init__(self, defaults: Timeouts, metrics: GatewayMetrics) -> None:
        self.defaults = defaults  # for an upstream that names no timeouts of its own
        self.metrics = metrics
        self._http: HTTP11Client | None = None

    async def start(self) -> None:
        # Bodies are relayed as bytes, so upstreams must not compress them: no Accept-Encoding is sent.
        self._http = HTTP11Client()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

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

    async def forward(
        self,
        provider: str,
        upstream: Upstream,
        endpoint: str,
        body: Mapping[str, Any],
        *,
        stream: bool,
        request_id: str,
        native: NativeBody | None = None,
        native_answer: bool = False,
    ) -> Answer:
        """POSTs the OpenAI request `body` for `endpoint` to `upstream`, encoded by its wire format's
        codec, and returns the answer in OpenAI's format (a stream is read as it is consumed). A `native`
        body of the upstream's own format is sent instead, as the client wrote it; with `native_answer`
        the answer's events also carry the upstream's payloads untouched (`Event.native`).

        Raises `UpstreamError` for what a retry or a fallback may fix; an upstream 4xx is passed through.
        """
        assert self._http is not None, "UpstreamClient.start() was not awaited"
        public_model = upstream.public_model
        codec = codec_for(upstream.wire)
        passthrough = native is not None and native.wire == codec.native_kind
        if passthrough:
            assert native is not None
            path, payload = codec.encode_native(native.body, upstream.model, stream)
        else:
            path, payload = codec.encode_request(endpoint, body, upstream.model, stream)
        keep_native = passthrough and native_answer
        url = f"{upstream.base_url}/{path}"
        if upstream.query:
            url += ("&" if "?" in path else "?") + upstream.query
        headers = {"content-type": "application/json", "x-request-id": request_id, **upstream.headers}
        if upstream.auth is not None:
            try:
                headers.update(await upstream.auth.authorize("POST", url, headers, payload))
            except CredentialsError as exc:
                raise self._fail(
                    provider,
                    "auth",
                    502,
                    f"The gateway has no credentials for `{public_model}`: {exc.message}",
                    "upstream_auth_failed",
                    retryable=exc.retryable,
                ) from None
        span = upstream_span(provider, upstream, url, headers)
        timeouts = upstream.timeouts or self.defaults
        first = b""
        started = time.perf_counter()
        resp: Response | None = None
        try:
            # A stream's first token and chunks are timed here and by the relay; vLLM sends nothing until
            # a non-streamed answer is whole, so only the total bounds that.
            async with asyncio.timeout(timeouts.first_token_s if stream else timeouts.total_s):
                resp = await self._http.request("POST", url, headers, payload, timeouts.connect_s)
                if stream and resp.status == 200:
                    first = await resp.readany()
                else:
                    raw = await resp.read()
        except TimeoutError:
            if resp is not None:
                resp.close()
            end_span(span, 504)
            raise self._fail(
                provider,
                "timeout",
                504,
                f"The upstream for `{public_model}` timed out.",
                "upstream_timeout",
                retryable=False,
            ) from None
        except UpstreamConnectError as exc:
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
        except (OSError, ValueError) as exc:  # the connection broke; a header value that cannot be sent
            if resp is not None:
                resp.close()
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
        except BaseException:
            if resp is not None:
                resp.close()  # cancelled, the client gone: the upstream sees the connection end and stops
            raise

        end_span(span, resp.status)
        answer_headers = {"x-iir-model": public_model}
        if resp.status != 200:
            raise self._status_error(provider, resp, raw, public_model, answer_headers)
        if not stream:
            document = codec.decode_response(raw)
            if document is not None and keep_native:
                document.native = [raw]
            if document is None:
                raise self._fail(
                    provider,
                    "protocol",
                    502,
                    f"The upstream for `{public_model}` answered with a body that is not a JSON object.",
                    "upstream_error",
                    retryable=False,
                )
            return Answer(public_model, document=document, headers=answer_headers)
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
        self.metrics.ttft.labels(upstream.metric_model).observe(time.perf_counter() - started)
        relay = StreamRelay(
            resp,
            first,
            codec.stream_decoder(keep_native),
            timeouts.read_s,
            provider,
            public_model,
            upstream.metric_model,
            self.metrics,
            codec.framing(),
        )
        return Answer(public_model, stream=relay, headers=answer_headers)

    async def count_tokens(self, upstream: Upstream, body: Mapping[str, Any], timeout_s: float = 5.0) -> int | None:
        """The prompt tokens of the chat request `body` as `upstream` counts them when it answers (vLLM's
        `POST /tokenize`, chat template and tools included); None when it cannot say (an old server, an
        error, a timeout): the caller estimates instead."""
        assert self._http is not None, "UpstreamClient.start() was not awaited"
        fields = ("messages", "tools", "chat_template_kwargs", "add_generation_prompt")
        payload = {"model": upstream.model, **{k: body[k] for k in fields if k in body}}
        url = upstream.base_url.removesuffix("/v1") + "/tokenize"
        headers = {"content-type": "application/json", **upstream.headers}
        resp: Response | None = None
        try:
            async with asyncio.timeout(timeout_s):
                resp = await self._http.request("POST", url, headers, orjson.dumps(payload), timeout_s)
                raw = await resp.read()
            count = orjson.loads(raw).get("count") if resp.status == 200 else None
        except (TimeoutError, UpstreamConnectError, OSError, ValueError, AttributeError):
            if resp is not None:
                resp.close()
            return None
        return count if isinstance(count, int) and not isinstance(count, bool) else None

    def _status_error(
        self, provider: str, resp: Response, raw: bytes, public_model: str, answer_headers: dict[str, str]
    ) -> APIError:
        message = upstream_message(raw)
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
            # The provider's limits reach the client: `retry-after` and every `x-ratelimit-*` header.
            retry_after = {
                name.lower(): value
                for name, value in resp.headers.items()
                if name.lower() == "retry-after" or name.lower().startswith("x-ratelimit-")
            }
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
        # Other client errors are the caller's to fix: the upstream's own error object, status and all.
        err = upstream_error(raw, resp.status, public_model)
        return APIError(
            resp.status, err["message"], code=err["code"], type=err["type"], param=err["param"], headers=answer_headers
        )
