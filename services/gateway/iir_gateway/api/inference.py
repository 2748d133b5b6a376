"""One inference request from end to end: key, body, access, limits, dispatch, then usage and settling."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.responses import Response

from iir_common.logging import request_id_var
from iir_gateway.auto_routing import is_auto
from iir_gateway.dispatch import dispatch
from iir_gateway.errors import APIError
from iir_gateway.gateway import Gateway
from iir_gateway.providers.base import RouteRequest
from iir_gateway.schemas import InferenceRequest, validate_body
from iir_gateway.token_estimate import estimate_tokens


async def serve_inference(gw: Gateway, headers: Mapping[str, str], client_ip: str,
                          read_body: Callable[[], Awaitable[dict[str, Any]]],
                          schema: type[InferenceRequest], path: str) -> Response:
    """Serves one request to `path` (`chat/completions`, `completions`, `embeddings`) of the chosen model."""
    started = time.perf_counter()
    principal = await gw.auth.authenticate(headers, client_ip)
    body = await read_body()
    req = validate_body(schema, body)
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
    admission = await gw.limiter.admit(principal, estimate.total if estimate else 0)
    settled = False

    def on_done(usage: dict[str, Any] | None, ok: bool) -> None:
        nonlocal settled
        settled = True
        prompt = int((usage or {}).get("prompt_tokens") or (estimate or estimate_tokens(body, reserve)).prompt)
        completion = int((usage or {}).get("completion_tokens") or 0)
        gw.usage.record(principal.key_id, public_model, prompt, completion)
        gw.metrics.tokens.labels(public_model, "prompt").inc(prompt)
        gw.metrics.tokens.labels(public_model, "completion").inc(completion)
        key = principal.key_id or "static"
        gw.metrics.key_tokens.labels(key, "prompt").inc(prompt)
        gw.metrics.key_tokens.labels(key, "completion").inc(completion)
        gw.metrics.model_latency.labels(public_model, provider_name).observe(time.perf_counter() - started)
        if admission.reserved_tokens:
            gw.spawn(gw.limiter.settle(principal, admission.reserved_tokens, prompt + completion))

    provider_name = public_model.partition("/")[0]
    stream = bool(getattr(req, "stream", False))
    strip_usage = False
    if stream:
        options = body.get("stream_options") or {}
        if not options.get("include_usage"):  # ask for usage anyway, to account for the stream
            body["stream_options"] = {**options, "include_usage": True}
            strip_usage = True
    status = "error"
    try:
        response = await dispatch(gw, public_model, principal, RouteRequest(body, principal.priority,
                                                                            headers.get("x-session-id", "")),
                                  path, body, stream=stream, request_id=request_id_var.get() or "",
                                  on_done=on_done, strip_usage=strip_usage)
        status = str(response.status_code)
        response.headers.update(admission.headers)
        if route:
            response.headers["x-iir-route"] = route.header
        return response
    except APIError as exc:
        status = str(exc.status)
        exc.headers.update(admission.headers)
        if route:
            exc.headers["x-iir-route"] = route.header
        raise
    finally:
        if not settled and admission.reserved_tokens:
            gw.spawn(gw.limiter.settle(principal, admission.reserved_tokens, 0))  # nothing was generated
        gw.metrics.model_requests.labels(public_model, provider_name, status).inc()
