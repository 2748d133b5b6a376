"""One inference request from end to end: key, body, route, limits, upstream, then usage and settling."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from starlette.responses import Response

from iir_common.logging import request_id_var
from iir_gateway.errors import APIError
from iir_gateway.gateway import Gateway
from iir_gateway.providers.base import RouteRequest
from iir_gateway.schemas import ChatCompletionRequest, CompletionRequest, validate_body
from iir_gateway.token_estimate import estimate_tokens


async def serve_inference(gw: Gateway, headers: Mapping[str, str], client_ip: str,
                          read_body: Callable[[], Awaitable[dict[str, Any]]],
                          schema: type[ChatCompletionRequest] | type[CompletionRequest], path: str) -> Response:
    """Serves one request to `path` (`chat/completions` or `completions`) of the chosen upstream."""
    principal = await gw.auth.authenticate(headers, client_ip)
    body = await read_body()
    req = validate_body(schema, body)
    public_model = req.model
    provider, upstream = await gw.route(public_model, principal, RouteRequest(
        body, principal.priority, headers.get("x-session-id", "")))
    released = False

    def release(ok: bool) -> None:
        nonlocal released
        if not released:
            released = True
            provider.release(upstream, ok)
    reserve = gw.settings.completion_token_reserve
    # Estimating costs a walk over the messages: only keys with token limits need it up front.
    estimate = estimate_tokens(body, reserve) if principal.limited else None
    try:
        admission = await gw.limiter.admit(principal, estimate.total if estimate else 0)
    except BaseException:
        release(True)
        raise
    settled = False

    def on_done(usage: dict[str, Any] | None, ok: bool) -> None:
        nonlocal settled
        settled = True
        release(ok)
        prompt = int((usage or {}).get("prompt_tokens") or (estimate or estimate_tokens(body, reserve)).prompt)
        completion = int((usage or {}).get("completion_tokens") or 0)
        gw.usage.record(principal.key_id, public_model, prompt, completion)
        gw.metrics.tokens.labels(public_model, "prompt").inc(prompt)
        gw.metrics.tokens.labels(public_model, "completion").inc(completion)
        if admission.reserved_tokens:
            gw.spawn(gw.limiter.settle(principal, admission.reserved_tokens, prompt + completion))

    body["model"] = upstream.model
    strip_usage = False
    if req.stream:
        options = body.get("stream_options") or {}
        if not options.get("include_usage"):  # ask for usage anyway, to account for the stream
            body["stream_options"] = {**options, "include_usage": True}
            strip_usage = True
    status = "error"
    try:
        response = await gw.upstream.forward(provider.name, upstream, path, orjson.dumps(body),
                                             stream=bool(req.stream), request_id=request_id_var.get() or "",
                                             public_model=public_model, on_done=on_done, strip_usage=strip_usage)
        status = str(response.status_code)
        if response.status_code != 200:
            release(response.status_code < 500)  # passed-through client errors say nothing of the replica
        response.headers.update(admission.headers)
        return response
    except APIError as exc:
        release(exc.status < 500)
        exc.headers.update(admission.headers)
        raise
    except BaseException:
        release(False)
        raise
    finally:
        if not settled and admission.reserved_tokens:
            gw.spawn(gw.limiter.settle(principal, admission.reserved_tokens, 0))  # nothing was generated
        gw.metrics.model_requests.labels(public_model, provider.name, status).inc()
