"""Admin UI sessions of people signed in through single sign-on: an opaque bearer token (`iir-session-…`)
whose hash names a Redis entry holding who it is and their role, so every gateway replica knows it and a
sign-out ends it everywhere. A session is never an API key: inference routes refuse it."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any

import orjson

SESSION_PREFIX = "iir-session-"
ROLES = ("admin", "viewer", "team_admin")


@dataclass(frozen=True, slots=True)
class Session:
    """Who signed in, and what they may do: `role` one of ROLES (`team_id` for a team admin)."""

    issuer: str
    subject: str
    email: str
    role: str
    team_id: str = ""
    team_name: str = ""
    expires_at: int = 0

    @property
    def actor(self) -> str:
        """The name the audit log gives them."""
        return f"sso:{self.email or self.subject}"


class SessionStore:
    def __init__(self, redis: Any, prefix: str, ttl_s: int) -> None:
        self.redis, self.prefix, self.ttl_s = redis, prefix, ttl_s

    def _key(self, token: str) -> str:
        # Only the token's hash is stored: a copy of Redis holds no usable session.
        return f"{self.prefix}sessions:{hashlib.sha256(token.encode()).hexdigest()}"

    async def create(self, session: Session) -> tuple[str, Session]:
        """A new session's token (shown once) and the session, expiring in `ttl_s`."""
        token = SESSION_PREFIX + secrets.token_urlsafe(32)
        stored = Session(**{**asdict(session), "expires_at": int(time.time()) + self.ttl_s})
        await self.redis.set(self._key(token), orjson.dumps(asdict(stored)), ex=self.ttl_s)
        return token, stored

    async def get(self, token: str) -> Session | None:
        if not token.startswith(SESSION_PREFIX) or len(token) > 200:
            return None
        raw = await self.redis.get(self._key(token))
        if raw is None:
            return None
        data = orjson.loads(raw)
        return Session(**data) if data.get("role") in ROLES else None

    async def end(self, token: str) -> None:
        await self.redis.delete(self._key(token))
