"""Each gRPC service over a real channel: auth against PostgreSQL, registry Watch, classifier."""

from __future__ import annotations

import asyncio

import asyncpg
import grpc
import pytest

from iir.v1 import auth_pb2, auth_pb2_grpc, classifier_pb2, classifier_pb2_grpc, registry_pb2, registry_pb2_grpc
from iir_auth.storage.migrations import MIGRATIONS, migrate
from iir_common.api_keys import hash_key
from iir_dev.stack import Stack
from tests.conftest import MASTER_KEY, SERVED


@pytest.fixture
async def channels(stack: Stack):  # type: ignore[no-untyped-def]
    p = stack.ports
    chans = {
        n: grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        for n, port in (("auth", p.auth), ("registry", p.registry), ("classifier", p.classifier))
    }
    yield chans
    for c in chans.values():
        await c.close()


async def test_auth_create_then_validate(channels, database_url: str) -> None:  # type: ignore[no-untyped-def]
    stub = auth_pb2_grpc.AuthServiceStub(channels["auth"])
    created = await stub.CreateKey(auth_pb2.CreateKeyRequest(name="grpc-test", priority=10, allowed_models=["local/*"]))
    assert created.key.startswith("iir-") and len(created.key) > 40
    assert created.info.prefix == created.key[:12]
    ok = await stub.ValidateKey(auth_pb2.ValidateKeyRequest(key=created.key))
    assert ok.valid and ok.key.id == created.info.id and ok.key.priority == 10
    assert list(ok.key.allowed_models) == ["local/*"] and ok.cache_ttl_seconds > 0
    bad = await stub.ValidateKey(auth_pb2.ValidateKeyRequest(key=created.key + "x"))
    assert not bad.valid and bad.reason == "unknown"
    master = await stub.ValidateKey(auth_pb2.ValidateKeyRequest(key=MASTER_KEY))
    assert master.valid and master.key.admin
    # Only the hash is stored, never the key.
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow("SELECT * FROM api_keys WHERE id = $1::uuid", created.info.id)
        assert row["key_hash"] == hash_key(created.key)
        assert created.key not in repr(dict(row))
        await conn.execute("UPDATE api_keys SET revoked_at = now() WHERE id = $1::uuid", created.info.id)
    finally:
        await conn.close()
    revoked = await stub.ValidateKey(auth_pb2.ValidateKeyRequest(key=created.key))
    assert not revoked.valid and revoked.reason == "revoked"


async def test_auth_key_state_by_id(channels) -> None:  # type: ignore[no-untyped-def]
    """What batches and jobs ask before each line: the key's state now, by id, as ValidateKey answers."""
    stub = auth_pb2_grpc.AuthServiceStub(channels["auth"])
    created = await stub.CreateKey(auth_pb2.CreateKeyRequest(name="state", allowed_models=["local/*"]))
    ok = await stub.KeyState(auth_pb2.KeyRef(id=created.info.id))
    assert ok.valid and ok.key.id == created.info.id and list(ok.key.allowed_models) == ["local/*"]
    await stub.UpdateKey(auth_pb2.UpdateKeyRequest(id=created.info.id, blocked=True))
    assert (await stub.KeyState(auth_pb2.KeyRef(id=created.info.id))).reason == "blocked"
    await stub.RevokeKey(auth_pb2.KeyRef(id=created.info.id))
    assert (await stub.KeyState(auth_pb2.KeyRef(id=created.info.id))).reason == "revoked"
    for missing in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        gone = await stub.KeyState(auth_pb2.KeyRef(id=missing))
        assert not gone.valid and gone.reason == "unknown"


async def test_auth_refuses_a_nameless_key(channels) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await auth_pb2_grpc.AuthServiceStub(channels["auth"]).CreateKey(auth_pb2.CreateKeyRequest(name=" "))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_migrations_are_idempotent_and_concurrent(database_url: str) -> None:
    conns = [await asyncpg.connect(database_url) for _ in range(3)]
    try:
        versions = await asyncio.gather(*(migrate(c) for c in conns))
        assert versions == [MIGRATIONS[-1][0]] * 3
        assert await migrate(conns[0]) == MIGRATIONS[-1][0]
        applied = await conns[0].fetchval("SELECT count(*) FROM iir_auth_migrations")
        assert applied == len(MIGRATIONS)
    finally:
        for c in conns:
            await c.close()


async def test_registry_list_resolve_and_watch(channels) -> None:  # type: ignore[no-untyped-def]
    stub = registry_pb2_grpc.RegistryServiceStub(channels["registry"])
    names = [m.name for m in (await stub.ListModels(registry_pb2.ListModelsRequest())).models]
    assert f"local/{SERVED}" in names and "local/pending" in names
    found = await stub.Resolve(registry_pb2.ResolveRequest(model=f"local/{SERVED}"))
    assert found.found and found.model.served_name == SERVED and found.model.endpoints[0].ready
    assert not (await stub.Resolve(registry_pb2.ResolveRequest(model="local/none"))).found
    call = stub.Watch(registry_pb2.WatchRequest())
    first = await call.read()
    assert first.type == registry_pb2.WatchEvent.SNAPSHOT and len(first.models) == len(names)
    call.cancel()


async def test_classifier_classifies(channels) -> None:  # type: ignore[no-untyped-def]
    stub = classifier_pb2_grpc.ClassifierServiceStub(channels["classifier"])
    reply = await stub.Classify(
        classifier_pb2.ClassifyRequest(
            messages=[classifier_pb2.Turn(role="user", content="Write a python function that parses a regex")]
        )
    )
    assert reply.category == "code" and reply.model_version.startswith("minilm-l6-heads")
    assert 0 <= reply.category_confidence <= 1 and reply.complexity in ("simple", "hard") and reply.language == "en"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Classify(classifier_pb2.ClassifyRequest())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Concurrent requests are batched together and each gets its own answer.
    prompts = [
        "Translate 'thank you' into Japanese.",
        "Prove that there are infinitely many primes.",
        "Write a haiku about snow.",
        "Hello! How are you?",
    ] * 4
    replies = await asyncio.gather(
        *(
            stub.Classify(classifier_pb2.ClassifyRequest(messages=[classifier_pb2.Turn(role="user", content=p)]))
            for p in prompts
        )
    )
    assert [r.category for r in replies[:4]] == ["translation", "math", "creative", "chat"]
    assert [r.category for r in replies] == [r.category for r in replies[:4]] * 4


async def test_logged_bodies_are_deleted_after_their_retention(database_url: str) -> None:
    from datetime import UTC, datetime, timedelta

    from iir_auth.storage.spend_store import LogFilter, SpendRow, SpendStore

    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    assert pool is not None
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        store = SpendStore(pool, retention_days=400, body_retention_days=7)
        now = datetime.now(UTC)
        key = "bodies-retention"
        rows = [
            SpendRow(now - timedelta(days=age), f"r{age}", key, "", "", "m", "m", "local", 1, 0, 1, 0.0, 1.0, 200,
                     False, "", {}, record_id=f"bodies-{age}-{now.timestamp()}", request_body="{}", response_body="{}")
            for age in (10, 1)
        ]  # fmt: skip
        assert await store.record(rows) == 2
        await store.drop_expired(now)
        entries = await store.logs(LogFilter(key_id=key), 10, bodies=True)
        kept = {e.row.request_id: e.row.request_body for e in entries}
        assert kept == {"r1": "{}", "r10": ""}  # the metadata stays; the old bodies are gone
    finally:
        await pool.close()
