"""OAuth access tokens from a token endpoint (Microsoft Entra ID, Google), cached until shortly before
they expire.

A token is cached under a digest of the credentials that got it, so a rotated secret or key file gets a
new token at its next request; one fetch at a time, the requests meanwhile waiting for it. What a token
endpoint answers is reported by its `error` fields only: never a secret, never a token.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson

from iir_gateway.upstream.http11 import HTTP11Client
from iir_gateway.upstream.target import CredentialsError

# A token is renewed when less than this is left of it (Google's and Entra's last an hour).
REFRESH_MARGIN_S = 300.0
TOKEN_TIMEOUT_S = 10.0


def digest(*parts: str | bytes) -> str:
    """A key for credentials that never holds them."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()


async def post_form(url: str, fields: dict[str, str], timeout_s: float = TOKEN_TIMEOUT_S) -> dict[str, Any]:
    """POSTs `fields` form-encoded to a token endpoint; its JSON answer (`access_token`, `expires_in`).
    Raises CredentialsError naming the endpoint's host and its `error`, never what was sent."""
    host = urlsplit(url).netloc or url
    client = HTTP11Client()
    headers = {"content-type": "application/x-www-form-urlencoded", "accept": "application/json"}
    try:
        async with asyncio.timeout(timeout_s):
            resp = await client.request("POST", url, headers, urlencode(fields).encode(), timeout_s)
            raw = await resp.read()
    except TimeoutError:
        raise CredentialsError(f"the token endpoint {host} timed out", retryable=True) from None
    except OSError:  # refused, unreachable, TLS, a broken answer
        raise CredentialsError(f"the token endpoint {host} is unreachable", retryable=True) from None
    finally:
        await client.close()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise CredentialsError(f"the token endpoint {host} answered {resp.status} without JSON", resp.status >= 500)
    if resp.status != 200 or not isinstance(data.get("access_token"), str):
        error = str(data.get("error") or "no access_token")[:100]
        described = str(data.get("error_description") or "")[:200]
        sent = [v for v in fields.values() if len(v) >= 8]  # belt and braces: nothing sent comes back out
        for value in sent:
            described = described.replace(value, "…")
        why = f"{error}: {described}" if described else error
        raise CredentialsError(f"the token endpoint {host} refused ({resp.status} {why})", resp.status >= 500)
    return data


class TokenCache:
    """The access token of one set of credentials, kept until `REFRESH_MARGIN_S` before it expires. A
    renewal that fails while the old token is still valid keeps using it."""

    def __init__(self) -> None:
        self._key = ""
        self._token = ""
        self._expires = 0.0  # time.monotonic()
        self._lock = asyncio.Lock()

    def _fresh(self, key: str, margin: float) -> bool:
        return bool(self._token) and self._key == key and time.monotonic() < self._expires - margin

    async def get(self, key: str, fetch: Callable[[], Awaitable[tuple[str, float]]]) -> str:
        """The token for the credentials digested as `key`; `fetch` gets a new one as (token, lifetime_s)."""
        if self._fresh(key, REFRESH_MARGIN_S):
            return self._token
        async with self._lock:
            if self._fresh(key, REFRESH_MARGIN_S):  # another request renewed it meanwhile
                return self._token
            try:
                token, lifetime_s = await fetch()
            except CredentialsError:
                if self._fresh(key, 0.0):
                    return self._token
                raise
            self._key, self._token = key, token
            self._expires = time.monotonic() + max(lifetime_s, 0.0)
            return token


def lifetime(data: dict[str, Any]) -> float:
    """A token answer's `expires_in` (seconds; Entra sends it as a string or a number)."""
    try:
        return float(data.get("expires_in") or 3600)
    except (TypeError, ValueError):
        return 3600.0
