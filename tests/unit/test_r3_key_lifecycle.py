"""Issue 29's key lifecycle in the gateway's authenticator with a fake auth service: failure buckets, the
fallback count shared by workers, every secret of a key dropped by its event, and the stale cache."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest

from iir.v1 import auth_pb2
from iir_common.key_events import KeyEvent
from iir_gateway.errors import APIError
from iir_gateway.keys.attempt_counts import AttemptCounts
from iir_gateway.keys.authenticator import Authenticator
from iir_gateway.keys.failure_buckets import failure_bucket
from iir_gateway.metrics import GatewayMetrics
from tests.unit.test_key_cache import DownRedis, NoChannel


class FakeAuth:
    """Accepts every secret as key `k1` until `down`; then answers UNAVAILABLE."""

    def __init__(self, valid: bool = True) -> None:
        self.valid, self.down, self.calls = valid, False, 0

    async def ValidateKey(self, request: auth_pb2.ValidateKeyRequest, timeout: float) -> auth_pb2.ValidateKeyResponse:
        self.calls += 1
        if self.down:
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata())
        if not self.valid:
            return auth_pb2.ValidateKeyResponse(valid=False, reason="unknown")
        info = auth_pb2.KeyInfo(id="k1", name="one")
        return auth_pb2.ValidateKeyResponse(valid=True, key=info, cache_ttl_seconds=60)


def authenticator(fake: FakeAuth, attempts: Path | None = None, stale_ttl_s: float = 0) -> Authenticator:
    auth = Authenticator(
        NoChannel(),
        DownRedis(),  # type: ignore[arg-type]
        GatewayMetrics(),
        timeout_s=1,
        failure_limit=3,
        failure_window_s=60,
        stale_ttl_s=stale_ttl_s,
        attempts_file=attempts,
    )
    auth._stub = fake  # type: ignore[assignment]
    auth.subscribed = True
    return auth


def headers(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.mark.parametrize(
    ("address", "bucket"),
    [
        ("203.0.113.11", "203.0.113.11"),
        ("::ffff:203.0.113.11", "203.0.113.11"),
        ("2001:db8:1:2::5", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::5", "2001:db8:1:3::/64"),
        ("", ""),
    ],
)
def test_failure_buckets(address: str, bucket: str) -> None:
    assert failure_bucket(address) == bucket


def test_the_fallback_count_is_shared_by_the_workers_of_a_pod(tmp_path: Path) -> None:
    """Redis away: two workers (two authenticators on one shared file) still allow the limit in all."""
    shared = tmp_path / "auth-failures"
    workers = [authenticator(FakeAuth(valid=False), shared) for _ in range(2)]

    async def go() -> list[int]:
        codes = []
        for i in range(8):
            try:
                await workers[i % 2].authenticate(headers(f"iir-guess-{i}"), "10.0.0.1")
            except APIError as exc:
                codes.append(exc.status)
        return codes

    assert asyncio.run(go()) == [401] * 3 + [429] * 5
    # Without the shared file each worker would have allowed 3.
    assert AttemptCounts(60, shared).add("10.0.0.1", 0) == 8


def test_an_event_drops_every_cached_secret_of_its_key() -> None:
    fake = FakeAuth()
    auth = authenticator(fake)

    async def go() -> None:
        for secret in ("iir-old-secret-in-grace", "iir-new-secret"):
            await auth.authenticate(headers(secret), "10.0.0.1")
        assert fake.calls == 2 and auth.cached_keys() == 2
        auth.invalidate(KeyEvent("updated", "k1", ""))  # names neither digest: the id is enough
        assert auth.cached_keys() == 0

    asyncio.run(go())


def test_known_keys_are_served_stale_while_auth_is_down_and_not_after_an_event() -> None:
    fake = FakeAuth()
    auth = authenticator(fake, stale_ttl_s=300)

    async def go() -> None:
        await auth.authenticate(headers("iir-known"), "10.0.0.1")
        fake.down = True
        auth._cache = {d: (p, f - 61, s - 61) for d, (p, f, s) in auth._cache.items()}  # 61 s later: not fresh
        assert (await auth.authenticate(headers("iir-known"), "10.0.0.1")).key_id == "k1"
        calls = fake.calls
        await auth.authenticate(headers("iir-known"), "10.0.0.1")
        assert fake.calls == calls  # auth is asked again only every few seconds
        with pytest.raises(APIError) as unknown:
            await auth.authenticate(headers("iir-unknown"), "10.0.0.1")
        assert unknown.value.status == 503
        auth.invalidate(KeyEvent("revoked", "k1", ""))
        with pytest.raises(APIError) as revoked:
            await auth.authenticate(headers("iir-known"), "10.0.0.1")
        assert revoked.value.status == 503

    asyncio.run(go())


def test_nothing_is_served_stale_by_default() -> None:
    fake = FakeAuth()
    auth = authenticator(fake)

    async def go() -> Any:
        await auth.authenticate(headers("iir-known"), "10.0.0.1")
        fake.down = True
        auth._cache = {d: (p, f - 61, s - 61) for d, (p, f, s) in auth._cache.items()}
        with pytest.raises(APIError) as refused:
            await auth.authenticate(headers("iir-known"), "10.0.0.1")
        return refused.value.status

    assert asyncio.run(go()) == 503
