"""The current state of a key, by id, for work that runs later on its behalf (batch lines, queued jobs).

Such work holds no secret, only the id of the key that made it; before each line or job it asks here what
the key may do now, not what it could when the work was made: a revoked, blocked or expired key is
refused, and a restricted or budget-cut one runs under its new settings. Answers are cached like the
authenticator's (for the auth service's cache TTL, and only while the key-event feed is followed); a key
event for the key drops its entry at once, so a change reaches running work within a round trip.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Protocol

import grpc

from iir.v1 import auth_pb2, auth_pb2_grpc
from iir_common.single_flight import SingleFlight
from iir_gateway.errors import APIError
from iir_gateway.principal import Principal

log = logging.getLogger(__name__)

_MAX_CACHED = 100_000
_WHY = {
    "revoked": "its API key was revoked",
    "blocked": "its API key is blocked",
    "expired": "its API key expired",
    "unknown": "its API key no longer exists",
}


class OwnerRefused(Exception):
    """The key may no longer run work: revoked, blocked, expired or gone."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason if reason in _WHY else "unknown"

    @property
    def code(self) -> str:
        return f"key_{self.reason}"

    @property
    def why(self) -> str:
        """Why, as the end of a sentence ("its API key was revoked")."""
        return _WHY[self.reason]


class OwnerLookup(Protocol):
    """What work that runs later asks before each line or job (Owners, or a test's fake)."""

    async def current(self, made_by: Principal, **changes: object) -> Principal: ...


class Owners:
    def __init__(self, channel: grpc.aio.Channel, timeout_s: float, following: Callable[[], bool]) -> None:
        self._stub = auth_pb2_grpc.AuthServiceStub(channel)
        self._timeout = timeout_s
        self._following = following  # the key-event feed is subscribed: cached answers stay true
        self._cache: dict[str, tuple[Principal | OwnerRefused, float]] = {}
        self._inflight: SingleFlight[str, Principal | OwnerRefused] = SingleFlight()
        self._events = 0

    def invalidate(self, key_id: str | None) -> None:
        """A key event for `key_id` (None: events may have been missed, forget every key)."""
        self._events += 1
        if key_id is None:
            self._cache.clear()
        else:
            self._cache.pop(key_id, None)

    async def current(self, made_by: Principal, **changes: object) -> Principal:
        """The principal of `made_by`'s key as it is now (with `changes`, such as a lower priority).
        OwnerRefused when the key may no longer run work; APIError 503 when auth cannot answer."""
        if made_by.configured:  # the master key or a static key: no database row, changed only by a restart
            return dataclasses.replace(made_by, **changes)  # type: ignore[arg-type]
        key_id = made_by.key_id
        hit = self._cache.get(key_id)
        if hit is not None and hit[1] > time.monotonic():
            state = hit[0]
        else:
            state = await self._inflight.run(key_id, lambda: self._ask(key_id))
        if isinstance(state, OwnerRefused):
            raise state
        return dataclasses.replace(state, **changes)  # type: ignore[arg-type]

    async def _ask(self, key_id: str) -> Principal | OwnerRefused:
        events = self._events
        try:
            reply: auth_pb2.ValidateKeyResponse = await self._stub.KeyState(
                auth_pb2.KeyRef(id=key_id), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            log.warning("auth service unavailable for a key check", extra={"grpc_code": exc.code().name})
            raise APIError(
                503, "The authentication service is unavailable; try again shortly.", code="auth_unavailable"
            ) from None
        state: Principal | OwnerRefused = (
            Principal.from_key_info(reply.key) if reply.valid else OwnerRefused(reply.reason)
        )
        # An answer read while an event arrived may predate it; without the feed, none stays true.
        if self._following() and events == self._events and reply.cache_ttl_seconds > 0:
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            self._cache[key_id] = (state, time.monotonic() + reply.cache_ttl_seconds)
        return state
