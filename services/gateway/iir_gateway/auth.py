"""Authenticates requests by API key, caching the auth service's answers so a known key costs no RPC."""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import time
from dataclasses import dataclass

import grpc

from iir.v1 import auth_pb2, auth_pb2_grpc
from iir_gateway.errors import APIError
from iir_gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)

_MAX_CACHED = 100_000


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's identity and what it may do."""

    key_id: str
    name: str
    admin: bool
    priority: int
    allowed_models: tuple[str, ...]

    def may_use(self, model: str) -> bool:
        return not self.allowed_models or any(fnmatch.fnmatchcase(model, p) for p in self.allowed_models)


def extract_key(headers: dict[str, str] | object) -> str | None:
    """The key from `Authorization: Bearer <key>` or `X-API-Key: <key>`."""
    get = headers.get  # type: ignore[attr-defined]
    auth = get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = get("x-api-key")
    return key.strip() if key and key.strip() else None


def _masked(key: str) -> str:
    return f"{key[:6]}…{key[-4:]}" if len(key) > 12 else "…"


class Authenticator:
    def __init__(self, channel: grpc.aio.Channel, timeout_s: float, metrics: GatewayMetrics) -> None:
        self._stub = auth_pb2_grpc.AuthServiceStub(channel)
        self._timeout = timeout_s
        self._metrics = metrics
        self._cache: dict[bytes, tuple[Principal, float]] = {}

    async def authenticate(self, headers: object, client_ip: str = "") -> Principal:
        key = extract_key(headers)
        if key is None:
            self._metrics.auth_failures.labels("missing").inc()
            raise APIError(401, "You didn't provide an API key. Send it as 'Authorization: Bearer <key>' "
                           "or 'X-API-Key: <key>'.", code="missing_api_key")
        digest = hashlib.sha256(key.encode()).digest()
        hit = self._cache.get(digest)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        try:
            reply: auth_pb2.ValidateKeyResponse = await self._stub.ValidateKey(
                auth_pb2.ValidateKeyRequest(key=key, client_ip=client_ip), timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            log.warning("auth service unavailable", extra={"grpc_code": exc.code().name})
            raise APIError(503, "The authentication service is unavailable; try again shortly.",
                           code="auth_unavailable") from None
        if not reply.valid:
            self._metrics.auth_failures.labels(reply.reason or "invalid").inc()
            self._cache.pop(digest, None)
            raise APIError(401, f"Incorrect API key provided: {_masked(key)} ({reply.reason or 'invalid'}).",
                           code="invalid_api_key")
        k = reply.key
        principal = Principal(k.id, k.name, k.admin, k.priority, tuple(k.allowed_models))
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        self._cache[digest] = (principal, time.monotonic() + max(0, reply.cache_ttl_seconds))
        return principal
