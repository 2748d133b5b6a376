"""Single sign-on for the admin UI: `/ui/sso/login` sends the browser to the identity provider,
`/ui/sso/callback` takes its answer, gives the person a role from their groups and a session, records the
sign-in in the audit log, and returns to the UI with the session in the URL's fragment (never sent to a
server). `/api/v1/session` says who the caller is (a session or a key); DELETE ends a session."""

from __future__ import annotations

import logging
import secrets
import urllib.parse
from typing import Protocol

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from iir.v1 import auth_pb2, auth_pb2_grpc
from iir_gateway.admin.access import AdminAccess, call_auth
from iir_gateway.admin.oidc import Identity, OIDCClient, SignInError
from iir_gateway.admin.sessions import Session, SessionStore
from iir_gateway.errors import APIError
from iir_gateway.keys.authenticator import extract_key
from iir_gateway.server.bodies import client_ip, json_response

log = logging.getLogger(__name__)


class RoleSettings(Protocol):
    @property
    def oidc_admin_groups(self) -> str: ...
    @property
    def oidc_viewer_groups(self) -> str: ...
    @property
    def oidc_team_admin_prefix(self) -> str: ...


class SsoDeps(AdminAccess, Protocol):
    """What the sign-in routes use of the runtime."""

    @property
    def settings(self) -> RoleSettings: ...
    @property
    def oidc(self) -> OIDCClient | None: ...
    @property
    def sessions(self) -> SessionStore: ...
    @property
    def auth_stub(self) -> auth_pb2_grpc.AuthServiceStub: ...


def _names(text: str) -> set[str]:
    return {n.strip() for n in text.split(",") if n.strip()}


async def _session_of(identity: Identity, settings: RoleSettings, stub: auth_pb2_grpc.AuthServiceStub) -> Session:
    """The role the person's groups give: admin, team admin (of the team the group names), or viewer."""
    groups = set(identity.groups)

    def session(role: str, team_id: str = "", team_name: str = "") -> Session:
        return Session(identity.issuer, identity.subject, identity.email, role, team_id, team_name)

    if groups & _names(settings.oidc_admin_groups):
        return session("admin")
    prefix = settings.oidc_team_admin_prefix
    teams = sorted(g.removeprefix(prefix) for g in groups if prefix and g.startswith(prefix))
    if teams:
        known = {t.name: t.id for t in (await call_auth(stub.ListTeams, auth_pb2.ListRequest())).teams}
        team = next((t for t in teams if t in known), None)
        if team is None:
            raise SignInError(f"Your group names the team {teams[0]!r}, which IIR does not have.")
        return session("team_admin", known[team], team)
    if groups & _names(settings.oidc_viewer_groups):
        return session("viewer")
    raise SignInError(f"{identity.email or identity.subject} is in none of the groups that give access to IIR.")


# The sign-in's state, kept by the browser that began it: a callback from another browser (a link an
# attacker made with their own sign-in, to log a victim in as them) is refused.
_STATE_COOKIE = "iir_sso_state"


def _back_to_ui(**fragment: str) -> Response:
    response = RedirectResponse(f"/ui/#{urllib.parse.urlencode(fragment)}", status_code=303)
    response.delete_cookie(_STATE_COOKIE, path="/ui/sso")
    return response


def router(deps: SsoDeps) -> APIRouter:
    routes = APIRouter(tags=["Single sign-on"])

    def client() -> OIDCClient:
        if deps.oidc is None:
            raise APIError(404, "Single sign-on is not configured (IIR_OIDC_ISSUER).", code="sso_not_configured")
        return deps.oidc

    @routes.get("/ui/sso", include_in_schema=False)
    async def sso_config() -> Response:
        return json_response({"enabled": deps.oidc is not None, "login_url": "/ui/sso/login"})

    @routes.get("/ui/sso/login", include_in_schema=False)
    async def sso_login() -> Response:
        try:
            url, state = await client().start()
        except SignInError as exc:
            return _back_to_ui(sso_error=str(exc))
        response = RedirectResponse(url, status_code=303)
        response.set_cookie(_STATE_COOKIE, state, max_age=600, path="/ui/sso", httponly=True, samesite="lax")
        return response

    @routes.get("/ui/sso/callback", include_in_schema=False)
    async def sso_callback(request: Request) -> Response:
        oidc = client()
        params = request.query_params
        if params.get("error"):  # the person declined, or the provider refused
            return _back_to_ui(sso_error=f"The identity provider said: {params.get('error', '')[:100]}.")
        state = params.get("state", "")
        if not state or not secrets.compare_digest(request.cookies.get(_STATE_COOKIE, ""), state):
            return _back_to_ui(sso_error="This sign-in began in another browser; sign in again here.")
        try:
            identity = await oidc.finish(params.get("code", ""), state)
            session = await _session_of(identity, deps.settings, deps.auth_stub)
        except SignInError as exc:
            log.warning("sign-in refused", extra={"reason": str(exc)})
            return _back_to_ui(sso_error=str(exc))
        token, session = await deps.sessions.create(session)
        sign_in = auth_pb2.SignIn(
            issuer=session.issuer,
            subject=session.subject,
            email=session.email,
            role=session.role,
            team_id=session.team_id,
        )
        await call_auth(deps.auth_stub.RecordSignIn, sign_in, session.actor)
        return _back_to_ui(session=token)

    @routes.get("/api/v1/session", tags=["Single sign-on"], summary="Who the caller is: a signed-in person or a key")
    async def whoami(request: Request) -> Response:
        token = extract_key(request.headers) or ""
        session = await deps.sessions.get(token)
        if session is not None:
            return json_response(
                {
                    "kind": "session",
                    "email": session.email,
                    "role": session.role,
                    "team_id": session.team_id or None,
                    "team_name": session.team_name or None,
                    "expires_at": session.expires_at,
                }
            )
        principal = await deps.auth.authenticate(request.headers, client_ip(request))
        return json_response(
            {
                "kind": "key",
                "name": principal.name,
                "role": "admin" if principal.admin else "key",
                "team_id": principal.team_id or None,
                "team_name": principal.team_name or None,
            }
        )

    @routes.delete("/api/v1/session", tags=["Single sign-on"], summary="Sign out: the session ends on every gateway")
    async def sign_out(request: Request) -> Response:
        await deps.sessions.end(extract_key(request.headers) or "")
        return Response(status_code=204)

    return routes
