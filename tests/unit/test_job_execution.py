"""A job's run with a fake store and fake pipeline: tokens published as events, the result assembled
from them, failures and cancellation final, a revoked owner refused, a token-limit 429 waited out."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from iir_gateway.answer import Answer, Event, ListStream
from iir_gateway.errors import APIError
from iir_gateway.jobs.store import Job
from iir_gateway.jobs.worker import JobWorker
from iir_gateway.keys.owners import OwnerRefused
from iir_gateway.principal import Principal
from tests.unit.fakes import PRINCIPAL, FakePipeline, chunks


class FakeRedis:
    def __init__(self, store: FakeStore) -> None:
        self.store = store

    async def hget(self, key: str, field: str) -> bytes:
        return self.store.status.encode()


class FakeStore:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.final: tuple[str, dict[str, Any]] | None = None
        self.status = "queued"
        self.redis = FakeRedis(self)

    def key(self, job_id: str) -> str:
        return job_id

    async def update(self, job_id: str, **fields: Any) -> None:
        self.status = fields.get("status", self.status)

    async def add_event(self, job_id: str, kind: str, data: dict[str, Any]) -> None:
        self.events.append((kind, data))

    async def finish(self, job: Job, status: str, **fields: Any) -> bool:
        if self.final is not None:
            return False
        self.final = (status, fields)
        return True


class Owners:
    """The key's state now: unchanged, or refused for `reason`."""

    def __init__(self, reason: str = "") -> None:
        self.reason = reason

    async def current(self, made_by: Principal, **changes: object) -> Principal:
        if self.reason:
            raise OwnerRefused(self.reason)
        return dataclasses.replace(made_by, **changes)  # type: ignore[arg-type]


def job(**kw: Any) -> Job:
    body = {"model": "fake/a", "messages": [{"role": "user", "content": "hi"}]}
    return Job("j1", "k1", "chat", "chat/completions", "queued", body, dataclasses.asdict(PRINCIPAL), 0.0, **kw)


async def no_sleep(seconds: float) -> None:
    """A rate-limited job's wait, on a fake clock."""


def execute(
    outcomes: list[Answer | APIError], refused: str = "", the_job: Job | None = None
) -> tuple[FakeStore, FakePipeline]:
    store, pipeline = FakeStore(), FakePipeline(outcomes)
    worker = JobWorker(pipeline, store, Owners(refused), 1, 30.0, sleep=no_sleep)  # type: ignore[arg-type]
    asyncio.run(worker._execute(the_job or job()))
    return store, pipeline


def test_tokens_become_events_and_the_result_is_the_completion_they_make() -> None:
    store, pipeline = execute([Answer("fake/a", stream=ListStream(chunks(["Hel", "lo"]), None))])
    ctx = pipeline.contexts[0]
    assert ctx.principal == PRINCIPAL and not ctx.count_request  # counted when it was queued
    assert ctx.body["stream"] and ctx.body["stream_options"] == {"include_usage": True}
    tokens = [data for kind, data in store.events if kind == "token"]
    assert len(tokens) == 4
    assert store.final is not None and store.final[0] == "completed"
    result = store.final[1]["result"]
    assert result["choices"][0]["message"]["content"] == "Hello" and result["usage"]["completion_tokens"] == 2


def test_a_broken_stream_fails_the_job() -> None:
    broken = [*chunks(["a"], usage=False)[:1], Event(b'{"error":{"message":"cut","code":"upstream_error"}}')]
    store, _ = execute([Answer("fake/a", stream=ListStream(broken, None))])
    assert store.final is not None and store.final[0] == "failed"


def test_a_refused_request_fails_the_job_with_its_error_as_http_would_write_it() -> None:
    store, _ = execute([APIError(403, "not yours", code="model_not_allowed")])
    error = {"message": "not yours", "type": "permission_error", "param": None, "code": "model_not_allowed"}
    assert store.final == ("failed", {"error": {**error, "status": 403}})


def test_a_rate_limit_without_a_type_fails_the_job_as_a_rate_limit_error() -> None:
    store, _ = execute([APIError(429, "slow down", code="model_saturated")])  # no retry-after: not waited for
    assert store.final is not None and store.final[1]["error"]["type"] == "rate_limit_error"
    assert store.final[1]["error"]["status"] == 429


@pytest.mark.parametrize("reason", ["revoked", "blocked", "expired"])
def test_a_refused_owner_is_refused_when_the_job_is_picked_up(reason: str) -> None:
    store, pipeline = execute([], refused=reason)
    assert pipeline.contexts == [] and store.final is not None
    assert store.final[0] == "cancelled" and store.final[1]["error"]["code"] == f"key_{reason}"


def test_a_token_limit_refusal_waits_for_the_bucket() -> None:
    limited = APIError(429, "tokens", code="rate_limit_exceeded", headers={"retry-after": "1"})
    store, pipeline = execute([limited, Answer("fake/a", stream=ListStream(chunks(["x"]), None))])
    assert len(pipeline.contexts) == 2 and store.final is not None and store.final[0] == "completed"


def test_a_second_attempt_tells_followers_to_drop_the_first_ones_tokens() -> None:
    store, _ = execute([Answer("fake/a", stream=ListStream(chunks(["x"]), None))], the_job=job(attempts=1))
    assert store.events[0][0] == "restart" and store.events[0][1]["attempt"] == 2
