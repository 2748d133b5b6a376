"""Single sign-on for the admin UI against a local OpenID Connect provider (tests/fakes/oidc_provider.py):
the authorization code flow with PKCE through the gateway's own routes, each role enforced by the API
(admin, viewer, team admin), the sign-in in the audit log, sign-out everywhere, and the attacks: a code or
state used twice, an ID token for another client, signed by another key or answering another sign-in,
a person in no IIR group, and a session used as an API key."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from iir_dev import datastores
from iir_dev.stack import Stack
from tests.conftest import MASTER_KEY, SERVED
from tests.fakes.oidc_provider import CLIENT_ID, CLIENT_SECRET, Provider

ADMIN = {"Authorization": f"Bearer {MASTER_KEY}"}


@pytest.fixture(scope="module")
def sso(stack: Stack) -> Iterator[tuple[str, Provider]]:
    """A gateway replica whose admin UI signs in through a provider listening on this test's loop thread."""
    port = datastores.free_port()
    gateway = f"http://127.0.0.1:{port}"
    provider = Provider(f"{gateway}/ui/sso/callback")
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(provider.app())
    provider_port = datastores.free_port()

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", provider_port).start()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    provider.issuer = f"http://127.0.0.1:{provider_port}"
    env = {
        "IIR_OIDC_ISSUER": provider.issuer,
        "IIR_OIDC_CLIENT_ID": CLIENT_ID,
        "IIR_OIDC_CLIENT_SECRET": CLIENT_SECRET,
        "IIR_OIDC_REDIRECT_URL": provider.redirect_uri,
    }
    yield stack.start_gateway_replica("gateway-sso", env=env, port=port), provider
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)


def sign_in(gateway: str, provider: Provider, groups: list[str], email: str = "") -> tuple[str, str]:
    """The browser's round trip: (the session token, or "" and the error the UI is sent back with)."""
    person = {"sub": uuid.uuid4().hex, "email": email or f"{uuid.uuid4().hex[:6]}@example.com", "groups": groups}
    httpx.post(f"{provider.issuer}/_person", json=person)
    with httpx.Client() as browser:  # its cookies: the sign-in's state comes back with it
        to_provider = browser.get(f"{gateway}/ui/sso/login")
        assert to_provider.status_code == 303 and to_provider.headers["location"].startswith(provider.issuer)
        back = browser.get(to_provider.headers["location"])
        assert back.status_code == 302, back.text
        landed = browser.get(back.headers["location"])
    assert landed.status_code == 303 and landed.headers["location"].startswith("/ui/#")
    fragment = dict(httpx.QueryParams(landed.headers["location"].split("#", 1)[1]))
    return fragment.get("session", ""), fragment.get("sso_error", "")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_an_admin_signs_in_and_the_sign_in_is_audited(sso: tuple[str, Provider]) -> None:
    gateway, provider = sso
    assert httpx.get(f"{gateway}/ui/sso").json() == {"enabled": True, "login_url": "/ui/sso/login"}
    token, error = sign_in(gateway, provider, ["iir-admins"], "ada@example.com")
    assert token.startswith("iir-session-") and not error
    me = httpx.get(f"{gateway}/api/v1/session", headers=bearer(token)).json()
    assert me["kind"] == "session" and me["role"] == "admin" and me["email"] == "ada@example.com"
    made = httpx.post(f"{gateway}/api/v1/apikeys", headers=bearer(token), json={"name": "made-by-sso"})
    assert made.status_code == 201, made.text
    audit = httpx.get(f"{gateway}/api/v1/audit", headers=ADMIN).json()["data"]
    assert any(e["action"] == "session.sign_in" and e["target"] == "user:ada@example.com" for e in audit)
    assert any(e["action"] == "key.create" and e["actor"] == "sso:ada@example.com" for e in audit), audit[:3]
    # Signing out ends the session on every gateway.
    assert httpx.delete(f"{gateway}/api/v1/session", headers=bearer(token)).status_code == 204
    ended = httpx.get(f"{gateway}/api/v1/apikeys", headers=bearer(token))
    assert ended.status_code == 401 and ended.json()["error"]["code"] == "session_expired"


def test_a_viewer_reads_and_changes_nothing(sso: tuple[str, Provider]) -> None:
    gateway, provider = sso
    token, _ = sign_in(gateway, provider, ["iir-viewers"])
    for path in ("/api/v1/apikeys", "/api/v1/teams", "/api/v1/spend", "/api/v1/logs", "/api/v1/audit"):
        assert httpx.get(f"{gateway}{path}", headers=bearer(token)).status_code == 200, path
    refused = httpx.post(f"{gateway}/api/v1/apikeys", headers=bearer(token), json={"name": "nope"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "read_only_role"


def test_a_team_admin_manages_its_own_team_only(stack: Stack, sso: tuple[str, Provider]) -> None:
    gateway, provider = sso
    teams = {}
    for name in (f"sso-a-{uuid.uuid4().hex[:6]}", f"sso-b-{uuid.uuid4().hex[:6]}"):
        teams[name] = httpx.post(f"{gateway}/api/v1/teams", headers=ADMIN, json={"name": name}).json()["id"]
    mine, theirs = teams
    other_key = httpx.post(
        f"{gateway}/api/v1/apikeys", headers=ADMIN, json={"name": "theirs", "team_id": teams[theirs]}
    ).json()
    token, _ = sign_in(gateway, provider, [f"iir-team-admin:{mine}"])
    assert httpx.get(f"{gateway}/api/v1/session", headers=bearer(token)).json()["team_name"] == mine
    made = httpx.post(f"{gateway}/api/v1/apikeys", headers=bearer(token), json={"name": "ours"})
    assert made.status_code == 201 and made.json()["team_id"] == teams[mine]
    escalate = httpx.post(f"{gateway}/api/v1/apikeys", headers=bearer(token), json={"name": "x", "admin": True})
    assert escalate.status_code == 403
    listed = httpx.get(f"{gateway}/api/v1/apikeys", headers=bearer(token)).json()["data"]
    assert [k["name"] for k in listed] == ["ours"]
    assert [t["name"] for t in httpx.get(f"{gateway}/api/v1/teams", headers=bearer(token)).json()["data"]] == [mine]
    for call in (httpx.delete, httpx.get):  # another team's key does not exist for it
        assert call(f"{gateway}/api/v1/apikeys/{other_key['id']}", headers=bearer(token)).status_code == 404
    moved = httpx.patch(
        f"{gateway}/api/v1/apikeys/{made.json()['id']}", headers=bearer(token), json={"team_id": teams[theirs]}
    )
    assert moved.status_code == 403
    for path in ("/api/v1/users", "/api/v1/audit"):  # admin pages
        assert httpx.get(f"{gateway}{path}", headers=bearer(token)).status_code == 403, path
    # Its request log and spend hold its team's requests only.
    for key in (made.json()["key"], other_key["key"]):
        body = {"model": f"local/{SERVED}", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        assert httpx.post(f"{gateway}/v1/chat/completions", headers=bearer(key), json=body).status_code == 200
    asked: dict[str, Any] = {"team_id": teams[theirs]}  # asking for another team's changes nothing

    def logged() -> list[dict[str, Any]]:
        return list(httpx.get(f"{gateway}/api/v1/logs", headers=bearer(token), params=asked).json()["data"])

    from tests.waiting import wait_for

    entries = wait_for(logged, timeout=30, interval=0.3, what="the team's request in the log")
    assert {e["team_id"] for e in entries} == {teams[mine]}
    spend = httpx.get(f"{gateway}/api/v1/spend", headers=bearer(token), params={"group_by": "team"}).json()
    assert {g["group"] for g in spend["data"]} <= {teams[mine]}


def test_sign_ins_that_must_fail(sso: tuple[str, Provider]) -> None:
    gateway, provider = sso
    token, error = sign_in(gateway, provider, ["engineering"])
    assert not token and "none of the groups" in error
    token, error = sign_in(gateway, provider, ["iir-team-admin:no-such-team"])
    assert not token and "no-such-team" in error
    for forged, why in (
        ({"aud": "another-client"}, "another issuer or client"),
        ({"iss": "http://evil.example"}, "another issuer or client"),
        ({"nonce": "not-this-sign-in"}, "not the answer to this sign-in"),
        ({"exp": 1}, "expired"),
    ):
        provider.forge = forged
        try:
            token, error = sign_in(gateway, provider, ["iir-admins"])
        finally:
            provider.forge = {}
        assert not token and why in error, (forged, error)
    # Signed by a key the provider does not publish.
    real_key = provider.key
    provider.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    try:
        provider.kid = "key-1"  # the published kid, another key: the signature is wrong
        token, error = sign_in(gateway, provider, ["iir-admins"])
    finally:
        provider.key = real_key
    # The gateway read the provider's keys before the swap (earlier sign-ins), so the signature fails.
    assert not token and "signature" in error, error


def test_a_callback_is_good_once_and_a_session_is_no_api_key(sso: tuple[str, Provider]) -> None:
    gateway, provider = sso
    httpx.post(f"{provider.issuer}/_person", json={"sub": "s", "email": "once@example.com", "groups": ["iir-admins"]})
    attacker, victim = httpx.Client(), httpx.Client()
    back = attacker.get(attacker.get(f"{gateway}/ui/sso/login").headers["location"]).headers["location"]
    # The attacker's own callback link, opened in the victim's browser: refused (login CSRF).
    forced = dict(httpx.QueryParams(victim.get(back).headers["location"].split("#", 1)[1]))
    assert "session" not in forced and "another browser" in forced["sso_error"]
    first = attacker.get(back).headers["location"]
    assert "session=" in first
    again = attacker.get(back).headers["location"]  # the same code and state, replayed
    assert "session=" not in again and "sso_error" in again
    token = dict(httpx.QueryParams(first.split("#", 1)[1]))["session"]
    body = {"model": f"local/{SERVED}", "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(f"{gateway}/v1/chat/completions", headers=bearer(token), json=body).status_code == 401
    made_up = httpx.get(f"{gateway}/api/v1/apikeys", headers=bearer("iir-session-made-up"))
    assert made_up.status_code == 401


def test_without_a_provider_the_routes_say_so(stack: Stack) -> None:
    assert httpx.get(f"{stack.gateway_url}/ui/sso").json()["enabled"] is False
    assert httpx.get(f"{stack.gateway_url}/ui/sso/login").status_code == 404
