"""The spend and audit RPCs of the AuthService (a part of its servicer)."""

from __future__ import annotations

import logging
import time
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

import grpc
import orjson

from iir.v1 import auth_pb2
from iir_auth.storage.spend_store import GROUPINGS, SCOPE_KINDS, LogEntry, LogFilter, SpendRow

if TYPE_CHECKING:
    from iir_auth.audit import Audited
    from iir_auth.storage.spend_store import SpendStore

log = logging.getLogger(__name__)

_RETENTION_CHECK_S = 3600.0
_MAX_AUDIT = 1000
_MAX_LOGS = 500
_MAX_BODY = 1 << 20  # characters of a logged body kept, whatever the gateway's own cap


def _ms(moment: int) -> datetime | None:
    return datetime.fromtimestamp(moment / 1000, UTC) if moment else None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _cursor(entry: LogEntry) -> str:
    """A page's cursor: its last entry's time (microseconds, exactly as stored) and record id."""
    return f"{(entry.row.at - _EPOCH) // _MICROSECOND}:{entry.row.record_id}"


def _after(cursor: str) -> tuple[datetime, str] | None:
    """The entry a cursor names; ValueError for one this service did not make."""
    if not cursor:
        return None
    micros, _, record_id = cursor.partition(":")
    return _EPOCH + int(micros) * _MICROSECOND, record_id


def _record(row: SpendRow) -> auth_pb2.SpendRecord:
    return auth_pb2.SpendRecord(
        at_ms=int(row.at.timestamp() * 1000),
        request_id=row.request_id,
        key_id=row.key_id,
        user_id=row.user_id,
        team_id=row.team_id,
        model=row.model,
        answered_by=row.answered_by,
        provider=row.provider,
        prompt_tokens=row.prompt_tokens,
        cached_tokens=row.cached_tokens,
        completion_tokens=row.completion_tokens,
        cost=row.cost,
        latency_ms=row.latency_ms,
        status=row.status,
        cache_hit=row.cache_hit,
        end_user=row.end_user,
        tags_json=orjson.dumps(row.tags).decode() if row.tags else "",
        record_id=row.record_id,
        ttft_ms=row.ttft_ms,
        target=row.target,
        fallbacks=list(row.fallbacks),
        error_code=row.error_code,
        operation=row.operation,
        stream=row.stream,
        request_body=row.request_body,
        response_body=row.response_body,
    )


def _text(value: str, limit: int) -> str:
    """A text column's value: PostgreSQL refuses NUL characters."""
    return value.replace("\x00", "")[:limit]


def _tags(text: str) -> dict[str, object]:
    if "\\u0000" in text:
        return {}
    try:
        value = orjson.loads(text) if text else {}
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _row(r: auth_pb2.SpendRecord) -> SpendRow:
    return SpendRow(
        at=datetime.fromtimestamp(r.at_ms / 1000, UTC),
        request_id=_text(r.request_id, 200),
        key_id=_text(r.key_id, 200),
        user_id=_text(r.user_id, 200),
        team_id=_text(r.team_id, 200),
        model=_text(r.model, 300),
        answered_by=_text(r.answered_by, 300),
        provider=_text(r.provider, 100),
        prompt_tokens=r.prompt_tokens,
        cached_tokens=r.cached_tokens,
        completion_tokens=r.completion_tokens,
        cost=r.cost,
        latency_ms=r.latency_ms,
        status=r.status,
        cache_hit=r.cache_hit,
        end_user=_text(r.end_user, 200),
        tags=_tags(r.tags_json),
        record_id=_text(r.record_id, 200),
        ttft_ms=r.ttft_ms,
        target=_text(r.target, 300),
        fallbacks=tuple(_text(f, 300) for f in r.fallbacks[:10]),
        error_code=_text(r.error_code, 100),
        operation=_text(r.operation, 100),
        stream=r.stream,
        request_body=_text(r.request_body, _MAX_BODY),
        response_body=_text(r.response_body, _MAX_BODY),
    )


def _days(request: auth_pb2.QuerySpendRequest) -> tuple[date | None, date | None]:
    return (
        date.fromisoformat(request.since) if request.since else None,
        date.fromisoformat(request.until) if request.until else None,
    )


class SpendRpcs:
    spend: SpendStore
    audit: Audited
    _retention_checked = 0.0

    async def RecordSpend(
        self, request: auth_pb2.RecordSpendRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.RecordSpendResponse:
        inserted = await self.spend.record([_row(r) for r in request.records])
        if inserted < len(request.records):
            log.info("spend records already stored skipped", extra={"skipped": len(request.records) - inserted})
        if time.monotonic() - self._retention_checked > _RETENTION_CHECK_S:
            self._retention_checked = time.monotonic()
            await self.spend.drop_expired()
        return auth_pb2.RecordSpendResponse(inserted=inserted)

    async def QuerySpend(
        self, request: auth_pb2.QuerySpendRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.QuerySpendResponse:
        if request.group_by not in GROUPINGS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"group_by must be one of {', '.join(GROUPINGS)}")
        try:
            since, until = _days(request)
        except ValueError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "since and until are days, YYYY-MM-DD")
            raise
        groups = await self.spend.groups(request.group_by, since, until, request.key_id, request.team_id)
        return auth_pb2.QuerySpendResponse(
            groups=[
                auth_pb2.SpendGroup(
                    group=g.group,
                    name=g.name,
                    cost=g.cost,
                    requests=g.requests,
                    prompt_tokens=g.prompt_tokens,
                    completion_tokens=g.completion_tokens,
                )
                for g in groups
            ]
        )

    async def SpendSince(
        self, request: auth_pb2.SpendSinceRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.SpendSinceResponse:
        if request.scope_kind not in SCOPE_KINDS or not request.scope_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"scope_kind must be one of {', '.join(SCOPE_KINDS)}")
        since = datetime.fromtimestamp(max(0, request.since_ms) / 1000, UTC)
        cost, tokens, requests = await self.spend.spent_since(request.scope_kind, request.scope_id[:200], since)
        return auth_pb2.SpendSinceResponse(cost=cost, tokens=tokens, requests=requests)

    async def ListRequestLogs(
        self, request: auth_pb2.ListRequestLogsRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ListRequestLogsResponse:
        limit = min(max(request.limit or 50, 1), _MAX_LOGS)
        try:
            after = _after(request.after)
        except (ValueError, OverflowError, OSError):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "after: not a cursor this log gave")
        where = LogFilter(
            key_id=request.key_id,
            team_id=request.team_id,
            user_id=request.user_id,
            model=request.model,
            status=request.status,
            errors_only=request.errors_only,
            request_id=request.request_id,
            since=_ms(request.since_ms),
            until=_ms(request.until_ms),
            after=after,
        )
        entries = await self.spend.logs(where, limit + 1, request.include_bodies)
        page = entries[:limit]
        return auth_pb2.ListRequestLogsResponse(
            entries=[
                auth_pb2.RequestLogEntry(
                    record=_record(e.row), key_name=e.key_name, team_name=e.team_name, user_email=e.user_email
                )
                for e in page
            ],
            next=_cursor(page[-1]) if len(entries) > limit else "",
        )

    async def RecordSignIn(self, request: auth_pb2.SignIn, context: grpc.aio.ServicerContext) -> auth_pb2.SignIn:
        who = _text(request.email or request.subject, 200)
        after = {"issuer": _text(request.issuer, 300), "subject": _text(request.subject, 200), "role": request.role}
        if request.team_id:
            after["team_id"] = _text(request.team_id, 200)
        await self.audit.record(context, "session.sign_in", f"user:{who}", None, after)
        return request

    async def ListAudit(
        self, request: auth_pb2.ListAuditRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ListAuditResponse:
        limit = min(max(request.limit or 100, 1), _MAX_AUDIT)
        entries = await self.audit.store.entries(limit, request.target)
        return auth_pb2.ListAuditResponse(
            entries=[
                auth_pb2.AuditEntry(
                    id=e.id,
                    at_ms=int(e.at.timestamp() * 1000),
                    actor=e.actor,
                    action=e.action,
                    target=e.target,
                    before_json=orjson.dumps(e.before, default=str).decode() if e.before is not None else "",
                    after_json=orjson.dumps(e.after, default=str).decode() if e.after is not None else "",
                )
                for e in entries
            ]
        )
