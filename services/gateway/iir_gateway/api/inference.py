"""One inference request from end to end: key, body, scrubbing, auto routing, access, limits, cache,
dispatch, then answer scrubbing, usage and settling."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from starlette.responses import Response, StreamingResponse

from iir_common import tracing
from iir_common.logging import request_id_var
from iir_gateway.api.cache_step import cached_answer, remember_answer
from iir_gateway.auth import Principal
from iir_gateway.auto_routing import is_auto
from iir_gateway.dispatch import dispatch
from iir_gateway.errors import APIError
from iir_gateway.gateway import Gateway
from iir_gateway.providers.base import RouteRequest
from iir_gateway.request_span import RequestSpan
from iir_gateway.response_cache import wants_cache
from iir_gateway.schemas import InferenceRequest, validate_body
from iir_gateway.token_estimate import estimate_tokens


async def serve_inference(
    gw: Gateway,
    headers: Mapping[str, str],
    client_ip: str,
    read_body: Callable[[], Awaitable[dict[str, Any]]],
    schema: type[InferenceRequest],
    path: str,
) -> Response:
    """Serves one request to `path` (`chat/completions`, `completions`, `embeddings`) of the chosen model."""

    async def run(span: RequestSpan | None) -> Response:
        principal = await gw.auth.authenticate(headers, client_ip)
        return await _serve(gw, principal, headers, await read_body(), schema, path, span)

    return await _traced(run, path)


async def serve_as(
    gw: Gateway, principal: Principal, body: dict[str, Any], schema: type[InferenceRequest], path: str
) -> Response:
    """The same for a caller authenticated earlier (an async job runs on its owner's behalf; its request
    was counted against the key's RPM when it was queued, its tokens are counted now)."""
    return await _traced(lambda span: _serve(gw, principal, {}, body, schema, path, span, count_request=False), path)


async def _traced(run: Callable[[RequestSpan | None], Awaitable[Response]], path: str) -> Response:
    tracer = tracing.tracer()
    if tracer is None:
        return await run(None)
    span = RequestSpan(tracer, path)
    try:
        return await run(span)
    except APIError as exc:
        span.fail(exc.status, exc.code)
        raise
    except BaseException:
        span.fail(500, "internal_error")
        raise
    finally:
        span.detach()


async def _serve(
    gw: Gateway,
    principal: Principal,
    headers: Mapping[str, str],
    body: dict[str, Any],
    schema: type[InferenceRequest],
    path: str,
    span: RequestSpan | None,
    count_request: bool = True,
) -> Response:
    started = time.perf_counter()
    req = validate_body(schema, body)
    if span is not None:
        span.describe(body)
    scrub_mode = gw.scrubbing.mode(principal.scrub_mode)
    scrubbed = gw.scrubbing.request(body, scrub_mode)
    client_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    route = await gw.auto.choose(req.model, body) if is_auto(req.model) else None
    public_model = route.model if route else req.model
    try:
        gw.check_access(public_model, principal)
    except APIError as exc:
        if route:
            exc.headers["x-iir-route"] = route.header
        raise
    reserve = gw.settings.completion_token_reserve
    # Estimating costs a walk over the messages: only keys with token limits need it up front.
    estimate = estimate_tokens(body, reserve) if principal.limited else None
    admission = await gw.limiter.admit(principal, estimate.total if estimate else 0, count_request)
    # Hashed only for admitted requests, and before the body is adapted for its upstream.
    cache_key = (
        gw.cache.key(path, body, principal.key_id)
        if gw.cache is not None and wants_cache(body, headers.get("x-iir-cache", ""), principal.cache_mode)
        else None
    )
    settled = False
    answered_by = [public_model]
    answered_usage: list[dict[str, Any] | None] = [None]

    def on_done(usage: dict[str, Any] | None, ok: bool) -> None:
        nonlocal settled
        if settled:  # one settlement per request, whatever calls this
            return
        settled = True
        answered_usage[0] = usage
        prompt = int((usage or {}).get("prompt_tokens") or (estimate or estimate_tokens(body, reserve)).prompt)
        completion = int((usage or {}).get("completion_tokens") or 0)
        gw.usage.record(principal.key_id, public_model, prompt, completion)
        model_label, provider_label = gw.model_label(public_model)
        gw.metrics.tokens.labels(model_label, "prompt").inc(prompt)
        gw.metrics.tokens.labels(model_label, "completion").inc(completion)
        key = gw.metrics.key_label(principal.key_id or "static")
        gw.metrics.key_tokens.labels(key, "prompt").inc(prompt)
        gw.metrics.key_tokens.labels(key, "completion").inc(completion)
        gw.metrics.model_latency.labels(model_label, provider_label).observe(time.perf_counter() - started)
        if span is not None:
            span.finish(answered_by[0], usage, ok)
        if admission.reserved_tokens:
            gw.spawn(gw.limiter.settle(principal, admission.reserved_tokens, prompt + completion))

    stream = bool(getattr(req, "stream", False))
    strip_usage = False
    if stream:
        options = body.get("stream_options") or {}
        if not options.get("include_usage"):  # ask for usage anyway, to account for the stream
            body["stream_options"] = {**options, "include_usage": True}
            strip_usage = True
    status = "error"
    stream_returned = False  # a stream settles when it ends (on_done), not when its response object leaves
    try:
        hit = None
        if cache_key is not None:
            hit = await cached_answer(gw, cache_key, stream, client_usage, path == "chat/completions", on_done)
        response = hit or await dispatch(
            gw,
            public_model,
            principal,
            RouteRequest(body, principal.priority, headers.get("x-session-id", "")),
            path,
            body,
            stream=stream,
            request_id=request_id_var.get() or "",
            on_done=on_done,
            strip_usage=strip_usage,
        )
        status = str(response.status_code)
        answered_by[0] = response.headers.get("x-iir-model", public_model)
        if scrub_mode != "off" and hit is None:
            scrubbed |= scrub_answer(gw, response)
        if cache_key is not None and hit is None:
            remember_answer(gw, cache_key, response, lambda: answered_usage[0])  # after scrubbing: no secret kept
        if scrubbed:
            response.headers["x-iir-scrubbed"] = ",".join(sorted(scrubbed))
        response.headers.update(admission.headers)
        if route:
            response.headers["x-iir-route"] = route.header
        stream_returned = isinstance(response, StreamingResponse)
        return response
    except APIError as exc:
        status = str(exc.status)
        exc.headers.update(admission.headers)
        if route:
            exc.headers["x-iir-route"] = route.header
        raise
    finally:
        if not settled and not stream_returned and admission.reserved_tokens:
            settled = True
            gw.spawn(gw.limiter.settle(principal, admission.reserved_tokens, 0))  # nothing was generated
        gw.metrics.model_requests.labels(*gw.model_label(public_model), status).inc()


def scrub_answer(gw: Gateway, response: Response) -> set[str]:
    """Redacts secrets in a whole answer now, or in each event of a stream as it passes."""
    if isinstance(response, StreamingResponse):
        source = response.body_iterator
        scrubber = gw.scrubbing.stream()

        async def scrubbed_events() -> AsyncIterator[bytes]:
            async for chunk in source:
                out = scrubber.feed(chunk if isinstance(chunk, bytes) else chunk.encode())
                if out:
                    yield out
            tail = scrubber.flush()
            if tail:
                yield tail

        response.body_iterator = scrubbed_events()
        return set()
    body, found = gw.scrubbing.answer(bytes(response.body))
    if found:
        response.body = body
        response.headers["content-length"] = str(len(body))
    return found
