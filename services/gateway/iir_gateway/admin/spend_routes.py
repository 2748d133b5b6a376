"""What was spent, in money: `/api/v1/spend` (admin; JSON or CSV), `/api/v1/key/spend` (a key's own), and
the audit log of admin actions, `/api/v1/audit`."""

from __future__ import annotations

import csv
import io
from typing import Any, Literal, Protocol

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from iir.v1 import auth_pb2, auth_pb2_grpc
from iir_gateway.admin.access import AdminAccess, call_auth, require_admin
from iir_gateway.errors import APIError
from iir_gateway.server.bodies import client_ip, json_response
from iir_gateway.server.docs_routes import ADMIN_ERRORS


class SpendDeps(AdminAccess, Protocol):
    """What the spend and audit routes read of the runtime."""

    @property
    def auth_stub(self) -> auth_pb2_grpc.AuthServiceStub: ...


GroupBy = Literal["team", "user", "key", "model", "day"]
_COLUMNS = ("group", "name", "cost", "requests", "prompt_tokens", "completion_tokens")


def _groups(reply: auth_pb2.QuerySpendResponse) -> list[dict[str, Any]]:
    return [
        {
            "group": g.group,
            "name": g.name,
            "cost": round(g.cost, 9),
            "requests": g.requests,
            "prompt_tokens": g.prompt_tokens,
            "completion_tokens": g.completion_tokens,
        }
        for g in reply.groups
    ]


def _answer(group_by: str, rows: list[dict[str, Any]], fmt: str) -> Response:
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            # A name starting with = + - @ would be a formula in a spreadsheet.
            writer.writerow({k: f"'{v}" if isinstance(v, str) and v[:1] in "=+-@" else v for k, v in row.items()})
        return Response(
            out.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="spend-by-{group_by}.csv"'},
        )
    total = round(sum(r["cost"] for r in rows), 9)
    return json_response({"object": "list", "group_by": group_by, "currency": "USD", "total_cost": total, "data": rows})


def _audit_entry(e: auth_pb2.AuditEntry) -> dict[str, Any]:
    return {
        "id": e.id,
        "at_ms": e.at_ms,
        "actor": e.actor,
        "action": e.action,
        "target": e.target,
        "before": orjson.loads(e.before_json) if e.before_json else None,
        "after": orjson.loads(e.after_json) if e.after_json else None,
    }


def router(deps: SpendDeps) -> APIRouter:
    """Spend (all of it, or the calling key's own) and the audit log."""
    routes = APIRouter(prefix="/api/v1", tags=["Spend and audit"], responses=ADMIN_ERRORS)

    @routes.get("/spend", summary="Spend in money grouped by team, user, key, model or day (JSON, or CSV)")
    async def spend(
        request: Request,
        group_by: GroupBy = "team",
        since: str = "",
        until: str = "",
        format: Literal["json", "csv"] = "json",
    ) -> Response:
        admin = await require_admin(request, deps, team_scope=True)
        # A team admin sees its team's spend only (by key, user, model or day).
        query = auth_pb2.QuerySpendRequest(group_by=group_by, since=since, until=until, team_id=admin.team_id)
        return _answer(group_by, _groups(await admin.call(deps.auth_stub.QuerySpend, query)), format)

    @routes.get("/key/spend", summary="The calling key's own spend, grouped by model or day")
    async def own_spend(
        request: Request, group_by: Literal["model", "day"] = "model", since: str = "", until: str = ""
    ) -> Response:
        principal = await deps.auth.authenticate(request.headers, client_ip(request))
        if principal.configured:
            raise APIError(404, "Keys from the configuration have no spend records.", code="not_found")
        query = auth_pb2.QuerySpendRequest(group_by=group_by, since=since, until=until, key_id=principal.key_id)
        return _answer(group_by, _groups(await call_auth(deps.auth_stub.QuerySpend, query)), "json")

    @routes.get("/audit", summary="Admin actions, newest first: who, what, when, before and after")
    async def audit(request: Request, limit: int = 100, target: str = "") -> Response:
        admin = await require_admin(request, deps)
        if not 1 <= limit <= 1000:
            raise APIError(400, "Invalid value for 'limit': between 1 and 1000.", code="invalid_value", param="limit")
        reply = await admin.call(deps.auth_stub.ListAudit, auth_pb2.ListAuditRequest(limit=limit, target=target))
        return json_response({"object": "list", "data": [_audit_entry(e) for e in reply.entries]})

    return routes
