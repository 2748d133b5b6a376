"""Work that runs later asks for its key's current state: cached (one auth call per key, not per line),
dropped by a key event, refused once revoked or blocked; and a batch line's custom_id is held to the
request-id rule before it can name the line upstream."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import orjson
import pytest

from iir.v1 import auth_pb2
from iir_gateway.batches.runner import BatchRunner, parse_lines
from iir_gateway.batches.store import batch_object
from iir_gateway.errors import APIError
from iir_gateway.keys.owners import OwnerRefused, Owners
from iir_gateway.principal import Principal
from iir_gateway.request_ids import valid_request_id
from tests.unit.fakes import document_answer

MADE_BY = Principal(key_id="k1", name="k", admin=False, priority=50, allowed_models=())


class FakeAuth:
    def __init__(self) -> None:
        self.reply = auth_pb2.ValidateKeyResponse(
            valid=True, key=auth_pb2.KeyInfo(id="k1", name="k", priority=50), cache_ttl_seconds=30
        )
        self.calls = 0
        self.down = False

    async def KeyState(self, request: auth_pb2.KeyRef, *, timeout: float) -> auth_pb2.ValidateKeyResponse:
        self.calls += 1
        if self.down:
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata())
        return self.reply


def owners(following: bool = True) -> tuple[Owners, FakeAuth]:
    made = Owners(grpc.aio.insecure_channel("127.0.0.1:1"), 1.0, lambda: following)
    auth = FakeAuth()
    made._stub = auth  # type: ignore[assignment]
    return made, auth


def test_one_auth_call_per_key_until_a_key_event_drops_it() -> None:
    async def run() -> None:
        cache, auth = owners()
        got = await asyncio.gather(*(cache.current(MADE_BY, priority=0) for _ in range(20)))
        assert auth.calls == 1 and all(p.priority == 0 and p.key_id == "k1" for p in got)
        auth.reply = auth_pb2.ValidateKeyResponse(valid=False, reason="blocked", cache_ttl_seconds=30)
        assert (await cache.current(MADE_BY)).key_id == "k1"  # no event yet: the cached answer
        cache.invalidate("k1")
        with pytest.raises(OwnerRefused) as refused:
            await cache.current(MADE_BY)
        assert refused.value.code == "key_blocked" and auth.calls == 2
        auth.reply = auth_pb2.ValidateKeyResponse(
            valid=True, key=auth_pb2.KeyInfo(id="k1", allowed_models=["a/*"]), cache_ttl_seconds=30
        )
        cache.invalidate(None)  # the feed broke: everything is asked again
        assert (await cache.current(MADE_BY)).allowed_models == ("a/*",)

    asyncio.run(run())


def test_nothing_is_cached_without_the_key_event_feed_and_auth_down_is_a_503() -> None:
    async def run() -> None:
        cache, auth = owners(following=False)
        await cache.current(MADE_BY)
        await cache.current(MADE_BY)
        assert auth.calls == 2
        auth.down = True
        with pytest.raises(APIError) as down:
            await cache.current(MADE_BY)
        assert down.value.status == 503

    asyncio.run(run())


def test_configured_keys_are_not_looked_up() -> None:
    async def run() -> None:
        cache, auth = owners()
        master = Principal(key_id="master", name="master", admin=True, priority=100, allowed_models=())
        assert (await cache.current(master, priority=0)).priority == 0 and auth.calls == 0

    asyncio.run(run())


@pytest.mark.parametrize("custom_id", ["bad\u202eid", "nul\x00", "del\x7f", "nl\n", "a b", "x" * 129, 7, ["a"]])
def test_a_custom_id_that_is_no_request_id_fails_its_line(custom_id: Any) -> None:
    line = {"custom_id": custom_id, "method": "POST", "url": "/v1/embeddings", "body": {"model": "m"}}
    [(name, body, problem)] = parse_lines(orjson.dumps(line) + b"\n", "/v1/embeddings")
    assert body is None and "custom_id must be" in problem and name == "line-1" and valid_request_id(name)


def test_a_good_custom_id_passes() -> None:
    line = {"custom_id": "req-1.a:b_c", "method": "POST", "url": "/v1/embeddings", "body": {"model": "m"}}
    assert parse_lines(orjson.dumps(line), "/v1/embeddings") == [("req-1.a:b_c", {"model": "m"}, "")]


class FakeBatches:
    """The batch store's calls the runner makes, in memory."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.rec = record
        self.results: dict[int, dict[str, Any]] = {}

    async def record(self, batch_id: str) -> dict[str, Any]:
        return self.rec

    async def change(self, batch_id: str, change: Any) -> dict[str, Any]:
        self.rec["batch"].update(change(self.rec["batch"]) or {})
        return dict(self.rec["batch"])

    async def update(self, batch_id: str, **fields: Any) -> dict[str, Any]:
        return await self.change(batch_id, lambda _: fields)

    async def result_indexes(self, batch_id: str) -> set[int]:
        return set(self.results)

    async def results_in_order(self, batch_id: str, lines: int) -> Any:
        for index in sorted(self.results):
            yield index, orjson.dumps(self.results[index])

    async def add_result(self, batch_id: str, index: int, line: dict[str, Any], ok: bool) -> int:
        self.results.setdefault(index, line)
        return sum(len(orjson.dumps(r)) for r in self.results.values())

    async def drop_results(self, batch_id: str) -> None:
        self.results.clear()

    async def done(self, batch_id: str) -> None:
        return None


class FakeOutput:
    def __init__(self, files: FakeFiles) -> None:
        self.files, self.size, self.data = files, 0, bytearray()

    async def write(self, data: bytes) -> None:
        self.data += data
        self.size += len(data)

    async def commit(self, name: str, purpose: str) -> dict[str, Any]:
        self.files.made.append(bytes(self.data))
        return {"id": f"file-{len(self.files.made)}"}

    async def abort(self) -> None:
        return None


class FakeFiles:
    quota = None

    def __init__(self, content: bytes) -> None:
        self.body = content
        self.made: list[bytes] = []

    async def content(self, file_id: str, principal: Principal) -> bytes:
        return self.body

    def output(self, principal: Principal) -> FakeOutput:
        return FakeOutput(self)


class ScriptedOwners:
    """Answers in turn: a principal, or an exception to raise (the last answer repeats)."""

    def __init__(self, *answers: Any) -> None:
        self.answers, self.asked = list(answers), 0

    async def current(self, made_by: Principal, **changes: object) -> Principal:
        self.asked += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return made_by


class CountingPipeline:
    def __init__(self) -> None:
        self.sent = 0

    async def run(self, ctx: Any) -> Any:
        self.sent += 1
        return document_answer("m")()


def run_batch(owners: Any, lines: int = 6) -> tuple[FakeBatches, CountingPipeline]:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    content = b"".join(
        orjson.dumps({"custom_id": f"c{i}", "url": "/v1/chat/completions", "body": body}) + b"\n" for i in range(lines)
    )
    record = {
        "owner": "k1",
        "principal": MADE_BY.to_dict(),
        "batch": batch_object("b1", "/v1/chat/completions", "f1", "24h", None),
    }
    batches, pipeline = FakeBatches(record), CountingPipeline()
    runner = BatchRunner(pipeline, batches, FakeFiles(content), owners, concurrency=1)  # type: ignore[arg-type]
    asyncio.run(runner.run("b1"))
    return batches, pipeline


def test_a_batch_stops_at_the_first_line_after_its_key_is_refused() -> None:
    batches, pipeline = run_batch(ScriptedOwners(MADE_BY, MADE_BY, OwnerRefused("revoked")))
    batch = batches.rec["batch"]
    assert pipeline.sent == 2 and batch["status"] == "failed"
    assert batch["errors"]["data"][0]["code"] == "key_revoked" and "4 of 6" in batch["errors"]["data"][0]["message"]


def test_a_batch_waits_while_auth_cannot_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("iir_gateway.batches.runner.AUTH_WAIT_S", (0.01, 0.02))
    down = APIError(503, "auth down", code="auth_unavailable")
    batches, pipeline = run_batch(ScriptedOwners(MADE_BY, down, down, down, MADE_BY))
    assert pipeline.sent == 6 and batches.rec["batch"]["status"] == "completed"
