"""The request log: `/api/v1/logs` (admin: every key's requests, filtered) and `/api/v1/key/logs` (a key's
own), newest first, a page at a time. The entries are the spend records the gateways send the auth
service off the request path, with each request's details."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from iir.v1 import auth_pb2, auth_pb2_grpc
from iir_gateway.admin.access import AdminAccess, call_auth, require_admin
from iir_gateway.errors import APIError, invalid_value
from iir_gateway.server.bodies import client_ip, json_response
from iir_gateway.server.docs_routes import ADMIN_ERRORS


class LogDeps(AdminAccess, Protocol):
    """What the log routes read of the runtime."""

    @property
    def auth_stub(self) -> auth_pb2_grpc.AuthServiceStub: ...


def _ms(value: str, param: str, end: bool = False) -> int:
    """An ISO 8601 date or time (UTC unless it says otherwise) as Unix milliseconds; 0 when empty. With
    `end`, a date alone means the end of that day (`until=2026-12-07` keeps the 7th)."""
    if not value:
        return 0
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise invalid_value("a date or time in ISO 8601, e.g. 2026-12-07 or 2026-12-07T09:30:00Z", param) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if end and len(value) == 10:
        moment += timedelta(days=1)
    return int(moment.timestamp() * 1000)


def entry(e: auth_pb2.RequestLogEntry) -> dict[str, Any]:
    """A log entry as the API shows it."""
    r = e.record
    return {
        "id": r.record_id,
        "object": "request_log",
        "at_ms": r.at_ms,
        "request_id": r.request_id,
        "key_id": r.key_id,
        "key_name": e.key_name,
        "team_id": r.team_id,
        "team_name": e.team_name,
        "user_id": r.user_id,
        "user_email": e.user_email,
        "model": r.model,
        "answered_by": r.answered_by,
        "provider": r.provider,
        "target": r.target,
        "fallbacks": list(r.fallbacks),
        "operation": r.operation,
        "stream": r.stream,
        "status": r.status,
        "error_code": r.error_code or None,
        "prompt_tokens": r.prompt_tokens,
        "cached_tokens": r.cached_tokens,
        "completion_tokens": r.completion_tokens,
        "cost": round(r.cost, 9),
        "latency_ms": round(r.latency_ms, 3),
        "ttft_ms": round(r.ttft_ms, 3) if r.stream and r.ttft_ms else None,
        "cache_hit": r.cache_hit,
        "end_user": r.end_user or None,
        "metadata": orjson.loads(r.tags_json) if r.tags_json else {},
        # With `include=bodies`, for keys and teams that log them: JSON text, scrubbed, maybe cut short.
        **({"request_body": r.request_body, "response_body": r.response_body} if r.request_body else {}),
    }


def _page(reply: auth_pb2.ListRequestLogsResponse) -> Response:
    data = [entry(e) for e in reply.entries]
    return json_response({"object": "list", "data": data, "has_more": bool(reply.next), "next": reply.next or None})


def _query(
    request: Request, *, key_id: str = "", team_id: str = "", user_id: str = ""
) -> auth_pb2.ListRequestLogsRequest:
    """The log query of a request's parameters (`key_id`, `team_id` and `user_id` as the route allows)."""
    params = request.query_params
    limit, status = params.get("limit", "50"), params.get("status", "0")
    if not limit.isdigit() or not 1 <= int(limit) <= 500:
        raise invalid_value("Invalid value for 'limit': between 1 and 500.", "limit")
    if not status.isdigit() or not (status == "0" or 100 <= int(status) <= 599):
        raise invalid_value("Invalid value for 'status': an HTTP status.", "status")
    return auth_pb2.ListRequestLogsRequest(
        key_id=key_id,
        team_id=team_id,
        user_id=user_id,
        model=params.get("model", ""),
        status=int(status),
        errors_only=params.get("errors", "").lower() in ("1", "true", "yes"),
        request_id=params.get("request_id", ""),
        since_ms=_ms(params.get("since", ""), "since"),
        until_ms=_ms(params.get("until", ""), "until", end=True),
        after=params.get("after", ""),
        limit=int(limit),
        include_bodies="bodies" in params.get("include", "").split(","),
    )


def router(deps: LogDeps) -> APIRouter:
    """The request log: every request's metadata for an admin, a key's own requests for the key."""
    routes = APIRouter(prefix="/api/v1", tags=["Request logs"], responses=ADMIN_ERRORS)

    @routes.get(
        "/logs",
        summary="Requests, newest first: time, key, team, user, model asked and served, replica or provider, "
        "status, tokens, cost, latency, TTFT, cache hit, fallbacks, request id. Filters: key_id, team_id, "
        "user_id, model, status, errors, request_id, since, until; paging: limit and after (the `next` of "
        "the previous page); include=bodies: the logged request and answer bodies",
    )
    async def logs(request: Request) -> Response:
        admin = await require_admin(request, deps, team_scope=True)
        params = request.query_params
        query = _query(
            request,
            key_id=params.get("key_id", ""),
            team_id=admin.team_id or params.get("team_id", ""),  # a team admin sees its team's requests only
            user_id=params.get("user_id", ""),
        )
        return _page(await admin.call(deps.auth_stub.ListRequestLogs, query))

    @routes.get("/key/logs", summary="The calling key's own requests, newest first (the filters of /logs)")
    async def own_logs(request: Request) -> Response:
        principal = await deps.auth.authenticate(request.headers, client_ip(request))
        if principal.configured:
            raise APIError(404, "Keys from the configuration have no request log.", code="not_found")
        query = _query(request, key_id=principal.key_id)
        return _page(await call_auth(deps.auth_stub.ListRequestLogs, query))

    return routes
