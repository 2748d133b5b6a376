"""Authenticates requests by API key.

A key the auth service accepted is cached (for as long as it says), so a known key costs no RPC.
Key events (revoke, block, update, rotate, regenerate) are pushed by the auth service over Redis pub/sub
and drop every secret of that key from the cache at once (its current one and one kept for a grace
period); when the subscription breaks, the whole cache is dropped, since an event may have been missed.
While the auth service cannot answer, a key validated within IIR_KEY_STALE_TTL_S (and not dropped by an
event since) is still served from the cache, never past its expiry.

Attempts with unknown secrets are counted per client address (an IPv6 /64; see failure_buckets) in
Redis, before they reach auth, so every worker and replica shares one count; past the limit that address
gets 429s for unknown secrets. A secret the auth service issued (new, rotated, regenerated) or that
validated before is marked in Redis by its digest and is validated even from a locked-out address: a
guess cannot carry such a digest, so the lockout costs auth no RPC per guess.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import grpc
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from iir.v1 import auth_pb2, auth_pb2_grpc
from iir_common.api_keys import hash_key
from iir_common.key_events import KNOWN_SECRET_TTL_S, KeyEvent, channel, known_secret
from iir_common.single_flight import SingleFlight
from iir_gateway.errors import APIError
from iir_gateway.keys.attempt_counts import AttemptCounts
from iir_gateway.keys.failure_buckets import failure_bucket
from iir_gateway.metrics import GatewayMetrics
from iir_gateway.principal import Principal

log = logging.getLogger(__name__)

_MAX_CACHED = 100_000
# While auth is away, how long a key served from the stale cache is served without asking again.
_STALE_RETRY_S = 5.0
# One attempt more in the address's window (a counter without a TTL, left by a late refund, gets one);
# the third value is 1 for the first attempt past the limit in the window, whichever worker makes it.
_RESERVE_ATTEMPT = """
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('TTL', KEYS[1])
if ttl < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
local first = 0
if n > tonumber(ARGV[2]) and redis.call('SET', KEYS[2], 1, 'NX', 'EX', ttl) then first = 1 end
return {n, ttl, first}
"""


def counting_redis(url: str) -> aioredis.Redis:
    """The Redis client of failed-auth counting: a bounded pool where a flood of concurrent guesses waits
    for a connection (up to 5 s), instead of opening one per guess and timing out the connects, which
    would leave the count to each pod's own table."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=32, timeout=5, socket_connect_timeout=2, socket_timeout=5, health_check_interval=15
    )
    return aioredis.Redis(connection_pool=pool)


def extract_key(headers: Mapping[str, str]) -> str | None:
    """The key from `Authorization: Bearer <key>` or `X-API-Key: <key>`."""
    get = headers.get
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
    def __init__(
        self,
        channel: grpc.aio.Channel,
        redis: aioredis.Redis,
        metrics: GatewayMetrics,
        *,
        timeout_s: float,
        failure_limit: int,
        failure_window_s: int,
        prefix: str = "iir:",
        counters: aioredis.Redis | None = None,
        stale_ttl_s: float = 0.0,
        attempts_file: Path | None = None,
    ) -> None:
        self._stub = auth_pb2_grpc.AuthServiceStub(channel)
        self._redis = redis
        # Failed-auth counting waits longer than the hot path's client: a reply late under a flood of
        # guesses must still count, not let the guess through.
        self._counters = counters or redis
        self._timeout = timeout_s
        self._metrics = metrics
        self._failure_limit = failure_limit
        self._failure_window = failure_window_s
        self._prefix = prefix
        self._stale_ttl = stale_ttl_s
        self._stale_logged = 0.0
        # Digest → (principal, fresh until, served while auth is away until), in monotonic time.
        self._cache: dict[bytes, tuple[Principal, float, float]] = {}
        # Key id → the digests of its secrets in the cache (a regenerated key has two).
        self._by_id: dict[str, set[bytes]] = {}
        # Attempts per address counted here too (over all this pod's workers), for when Redis cannot answer.
        self._local_attempts = AttemptCounts(failure_window_s, attempts_file)
        self._inflight: SingleFlight[bytes, Principal] = SingleFlight()
        # Revocation events (and cache drops) seen so far: a validation that spans one is not cached.
        self._revocations = 0
        self.subscribed = False
        # Told of every key event (a key id) and cache drop (None): caches by key id (keys/owners.py).
        self.listeners: list[Callable[[str | None], None]] = []

    def invalidate(self, event: KeyEvent) -> None:
        """Drops every cached secret of the event's key, and the secret it names."""
        self._revocations += 1
        for listener in self.listeners:
            listener(event.key_id)
        for digest in self._by_id.pop(event.key_id, set()):
            self._cache.pop(digest, None)
        if event.key_hash:
            self._cache.pop(bytes.fromhex(event.key_hash), None)

    def cached_keys(self) -> int:
        """Keys this process can accept without asking auth."""
        now = time.monotonic()
        return sum(1 for _, until, _ in self._cache.values() if until > now)

    def clear(self) -> None:
        self._revocations += 1
        for listener in self.listeners:
            listener(None)
        self._cache.clear()
        self._by_id.clear()

    async def follow_revocations(self) -> None:
        """Listens for the auth service's key events for ever, resubscribing after failures."""
        backoff = 0.1
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(channel(self._prefix))
                # Anything cached before this point may have been revoked while nobody listened.
                self.clear()
                self.subscribed = True
                backoff = 0.1
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        try:
                            self.invalidate(KeyEvent.decode(message["data"]))
                        except (ValueError, KeyError):
                            log.warning("ignoring a malformed key event")
            except (RedisError, OSError) as exc:
                if self.subscribed:
                    log.warning("key event subscription lost; cache dropped", extra={"error": repr(exc)[:200]})
            finally:
                self.subscribed = False
                self.clear()
                await pubsub.aclose()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _known_good(self, digest: bytes) -> bool:
        try:
            return bool(await self._counters.exists(known_secret(self._prefix, digest.hex())))
        except RedisError:
            return False

    async def _remember(self, digest: bytes) -> None:
        try:
            await self._counters.set(known_secret(self._prefix, digest.hex()), 1, ex=KNOWN_SECRET_TTL_S)
        except RedisError:
            return

    async def _forget(self, digest: bytes) -> None:
        """A marked secret that auth refused (revoked, blocked, expired) counts as a guess from now on."""
        try:
            await self._counters.delete(known_secret(self._prefix, digest.hex()))
        except RedisError:
            return

    async def _reserve_attempt(self, client_ip: str) -> str | None:
        """Counts one attempt of an unknown key from `client_ip` (a failure bucket) before it reaches auth
        (so concurrent guesses cannot pass the limit together); 429 past the limit. Returns the counter
        to refund."""
        if not client_ip or self._failure_limit <= 0:
            return None
        key = f"{self._prefix}authfail:{client_ip}"
        counter: str | None = key
        local = self._local_attempts.add(client_ip)
        locked = f"{self._prefix}authlock:{client_ip}"
        try:
            attempts, ttl, first = await self._counters.eval(
                _RESERVE_ATTEMPT, 2, key, locked, self._failure_window, self._failure_limit
            )
        except RedisError:
            # Redis slow or away: this process's own count decides (the limit per process, not off).
            attempts, ttl, counter = local, self._failure_window, None
            first = attempts == self._failure_limit + 1
        if attempts > self._failure_limit:
            if first:
                self._metrics.auth_lockouts.inc()
                log.warning("failed-auth limit reached; unknown keys refused", extra={"client": client_ip})
            self._metrics.auth_failures.labels("blocked").inc()
            raise APIError(
                429,
                "Too many failed authentications from this address; try again later.",
                code="too_many_auth_failures",
                type="rate_limit_error",
                headers={"retry-after": str(max(1, int(ttl)))},
            )
        return counter

    async def _refund(self, client_ip: str, counter: str | None, remember: bytes | None = None) -> None:
        """Gives back a reserved attempt that was no wrong key (it validated, or auth could not answer); a
        key that validated (`remember`: its digest) passes later lockouts of any address."""
        self._local_attempts.add(client_ip, -1)
        try:
            async with self._counters.pipeline(transaction=False) as pipe:
                if counter is not None:
                    pipe.decr(counter)
                if remember is not None:
                    pipe.set(known_secret(self._prefix, remember.hex()), 1, ex=KNOWN_SECRET_TTL_S)
                await pipe.execute()
        except RedisError:
            return

    async def authenticate(self, headers: Mapping[str, str], client_ip: str = "") -> Principal:
        key = extract_key(headers)
        if key is None:
            self._metrics.auth_failures.labels("missing").inc()
            raise APIError(
                401,
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'.",
                code="missing_api_key",
            )
        digest = hash_key(key)
        hit = self._cache.get(digest)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        # Concurrent first uses of one key share one validation (a burst on a cold key is one RPC).
        return await self._inflight.run(digest, lambda: self._validate(key, digest, client_ip))

    def _stale(self, digest: bytes) -> Principal | None:
        """The cached principal of a key validated within the stale TTL and dropped by no event since."""
        entry = self._cache.get(digest)
        if entry is None or entry[2] <= time.monotonic() or not self.subscribed:
            return None
        return entry[0]

    def _serve_stale(self, digest: bytes, principal: Principal, grpc_code: str) -> Principal:
        """Serves a known key while auth cannot answer, asking auth again every few seconds."""
        now = time.monotonic()
        _, _, stale_until = self._cache[digest]
        self._cache[digest] = (principal, now + min(_STALE_RETRY_S, stale_until - now), stale_until)
        self._metrics.auth_stale.inc()
        if now - self._stale_logged > 10:
            self._stale_logged = now
            log.warning(
                "auth service unavailable; known keys served from the stale cache", extra={"grpc_code": grpc_code}
            )
        return principal

    async def _validate(self, key: str, digest: bytes, client_ip: str) -> Principal:
        # A secret auth issued or that validated before is never locked out by other clients' failures at
        # its address; an unknown one takes one of the address's attempts.
        known = self._stale(digest) is not None or await self._known_good(digest)
        bucket = failure_bucket(client_ip)
        counter = None if known else await self._reserve_attempt(bucket)
        revocations = self._revocations
        self._metrics.auth_validations.inc()
        try:
            reply: auth_pb2.ValidateKeyResponse = await self._stub.ValidateKey(
                auth_pb2.ValidateKeyRequest(key=key, client_ip=client_ip), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            # Only a call that never reached auth is given back: a guess that timed out was still a
            # guess (else a flood slowing auth down would lift its own limit).
            if not known and exc.code() == grpc.StatusCode.UNAVAILABLE:
                await self._refund(bucket, counter)
            stale = self._stale(digest)  # read again: an event may have dropped it meanwhile
            if stale is not None:
                return self._serve_stale(digest, stale, exc.code().name)
            log.warning("auth service unavailable", extra={"grpc_code": exc.code().name})
            raise APIError(
                503, "The authentication service is unavailable; try again shortly.", code="auth_unavailable"
            ) from None
        if not reply.valid:
            self._metrics.auth_failures.labels(reply.reason or "invalid").inc()
            self._cache.pop(digest, None)
            if known:
                await self._forget(digest)
            raise APIError(
                401,
                f"Incorrect API key provided: {_masked(key)} ({reply.reason or 'invalid'}).",
                code="invalid_api_key",
            )
        principal = Principal.from_key_info(reply.key)
        if known:  # renewed at each validation (once per cache TTL): a key in use never loses its mark
            await self._remember(digest)
        else:
            await self._refund(bucket, counter, remember=digest)
        if len(self._cache) >= _MAX_CACHED:
            self.clear()
        # Without the revocation feed, a cached answer could outlive a revocation; and an answer read
        # before a revocation event that arrived meanwhile may be that revocation's victim: cache neither.
        fresh = self.subscribed and revocations == self._revocations
        ttl = max(0, reply.cache_ttl_seconds) if fresh else 0
        stale_for = self._stale_ttl if ttl else 0.0
        # Never served stale past the key's expiry or the end of a grace period (of either secret).
        ends = [e for e in (reply.key.expires_at, reply.key.previous_valid_until) if e]
        if ends:
            stale_for = min(stale_for, min(ends) - time.time())
        now = time.monotonic()
        self._cache[digest] = (principal, now + ttl, now + max(ttl, stale_for))
        self._by_id.setdefault(principal.key_id, set()).add(digest)
        return principal
