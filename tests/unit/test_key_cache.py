"""The gateway's key cache with a fake auth service: a known key costs no call, a burst on a cold key
costs one, a revocation pushed over the event feed drops the key at once, and nothing is cached while
the feed is down or when a revocation arrived during the validation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from iir.v1 import auth_pb2
from iir_common.api_keys import hash_key
from iir_common.key_events import KeyEvent
from iir_gateway.errors import APIError
from iir_gateway.keys.authenticator import Authenticator
from iir_gateway.metrics import GatewayMetrics

KEY = "iir-testkey-0123456789abcdef"


class DownRedis:
    """Redis unreachable: failed-attempt counting falls back to this process's own count."""

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise RedisConnectionError("down")

        return fail


class FakeAuth:
    def __init__(self, valid: bool = True, delay: float = 0.0) -> None:
        self.valid, self.delay, self.calls = valid, delay, 0
        self.during: Any = None

    async def ValidateKey(self, request: auth_pb2.ValidateKeyRequest, timeout: float) -> auth_pb2.ValidateKeyResponse:
        self.calls += 1
        if self.during is not None:
            self.during()
        await asyncio.sleep(self.delay)
        if not self.valid:
            return auth_pb2.ValidateKeyResponse(valid=False, reason="unknown")
        info = auth_pb2.KeyInfo(id="k1", name="one")
        return auth_pb2.ValidateKeyResponse(valid=True, key=info, cache_ttl_seconds=60)


class NoChannel:
    """Enough of a gRPC channel to build a stub on; the fake replaces the stub."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def authenticator(fake: FakeAuth, subscribed: bool = True) -> Authenticator:
    auth = Authenticator(
        NoChannel(),
        DownRedis(),  # type: ignore[arg-type]
        GatewayMetrics(),
        timeout_s=1,
        failure_limit=3,
        failure_window_s=60,
    )
    auth._stub = fake  # type: ignore[assignment]
    auth.subscribed = subscribed
    return auth


HEADERS = {"authorization": f"Bearer {KEY}"}


def test_a_known_key_costs_no_call_and_a_cold_burst_costs_one() -> None:
    fake = FakeAuth(delay=0.01)
    auth = authenticator(fake)

    async def go() -> None:
        found = await asyncio.gather(*(auth.authenticate(HEADERS, "10.0.0.1") for _ in range(20)))
        assert {p.key_id for p in found} == {"k1"}
        await auth.authenticate(HEADERS, "10.0.0.1")

    asyncio.run(go())
    assert fake.calls == 1 and auth.cached_keys() == 1


def test_a_pushed_revocation_drops_the_key_at_once() -> None:
    fake = FakeAuth()
    auth = authenticator(fake)

    async def go() -> None:
        await auth.authenticate(HEADERS)
        auth.invalidate(KeyEvent("revoked", "k1", hash_key(KEY).hex()))
        await auth.authenticate(HEADERS)

    asyncio.run(go())
    assert fake.calls == 2


def test_nothing_is_cached_without_the_event_feed_or_across_a_revocation() -> None:
    offline = FakeAuth()
    auth = authenticator(offline, subscribed=False)
    asyncio.run(auth.authenticate(HEADERS))
    assert auth.cached_keys() == 0

    racing = FakeAuth()
    auth = authenticator(racing)
    racing.during = lambda: auth.invalidate(KeyEvent("revoked", "k1", ""))
    asyncio.run(auth.authenticate(HEADERS))
    assert auth.cached_keys() == 0


def test_wrong_keys_are_locked_out_per_address_even_without_redis() -> None:
    auth = authenticator(FakeAuth(valid=False))

    async def attempt(ip: str) -> int:
        try:
            await auth.authenticate({"authorization": "Bearer iir-wrong-key-000000000000"}, ip)
        except APIError as exc:
            return exc.status
        return 200

    statuses = [asyncio.run(attempt("10.0.0.9")) for _ in range(5)]
    assert statuses == [401, 401, 401, 429, 429]
    assert asyncio.run(attempt("10.0.0.10")) == 401


def test_no_key_is_a_401_naming_how_to_send_one() -> None:
    with pytest.raises(APIError) as err:
        asyncio.run(authenticator(FakeAuth()).authenticate({}))
    assert err.value.status == 401 and err.value.code == "missing_api_key"
