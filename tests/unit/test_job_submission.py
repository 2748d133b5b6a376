"""A job's submission through its own pipeline (`pipelines.submission_pipeline`) with fakes for the parts:
the caller authenticated, the body validated, the model checked (an `auto` one later), the size bounded,
the request scrubbed and counted against the RPM only, then stored and answered with the job's document;
refusals stop before anything is counted or stored."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from iir_common.secret_scrubber import SecretScrubber
from iir_gateway.accounting.rate_limiter import Admission
from iir_gateway.answer import Answer
from iir_gateway.errors import APIError
from iir_gateway.metrics import GatewayMetrics
from iir_gateway.pipeline.entry import run_request
from iir_gateway.pipeline.pipeline import Pipeline
from iir_gateway.pipeline.steps.enqueue import Enqueue
from iir_gateway.pipelines import submission_pipeline
from iir_gateway.principal import Principal
from iir_gateway.schemas import ChatCompletionRequest
from iir_gateway.scrubbing.policy import Scrubbing
from tests.unit.fakes import LIMITED, FakeDirectory, FakeLimiter, Spawner

A = "fake/a"
GOOD = {"authorization": "Bearer good"}
SECRET = "AKIAIOSFODNN7EXAMPLE"


@dataclass
class Settings:
    default_model: str = ""
    job_max_bytes: int = 2000
    job_max_queued_per_key: int = 2


class Keys:
    async def authenticate(self, headers: Mapping[str, str], client_ip: str) -> Principal:
        if headers.get("authorization") != GOOD["authorization"]:
            raise APIError(401, "Invalid API key.", code="invalid_api_key")
        return LIMITED


class Limiter(FakeLimiter):
    """Records how each admission was asked for: (tokens, count_request, ask, hold)."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[int, bool, object, bool]] = []

    async def admit(
        self, p: Principal, estimated_tokens: int, count_request: bool = True, ask: object = None, hold: bool = False
    ) -> Admission:
        self.asked.append((estimated_tokens, count_request, ask, hold))
        return await super().admit(p, estimated_tokens, count_request, ask, hold)


@dataclass
class StoredJob:
    id: str
    kind: str

    def public(self) -> dict[str, Any]:
        return {"job_id": self.id, "status": "pending", "kind": self.kind}


@dataclass
class Queue:
    stored: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)

    async def submit(
        self, principal: Principal, kind: str, path: str, request: dict[str, Any], max_queued: int = 0
    ) -> StoredJob | None:
        if max_queued and len(self.stored) >= max_queued:
            return None
        self.stored.append((principal.key_id, kind, path, request))
        return StoredJob(f"job_{len(self.stored)}", kind)


@dataclass
class Parts:
    settings: Settings = field(default_factory=Settings)
    auth: Keys = field(default_factory=Keys)
    scrubbing: Scrubbing = field(default_factory=lambda: Scrubbing(SecretScrubber(), "redact", GatewayMetrics()))
    directory: FakeDirectory = field(default_factory=lambda: FakeDirectory({A: APIError(500, "not dispatched")}))
    limiter: Limiter = field(default_factory=Limiter)
    jobs: Queue = field(default_factory=Queue)
    spawn: Spawner = field(default_factory=Spawner)


def submit(parts: Parts, body: dict[str, Any], kind: str = "chat", headers: Mapping[str, str] = GOOD) -> Answer:
    pipeline: Pipeline = submission_pipeline(parts)  # type: ignore[arg-type]

    async def go() -> Answer:
        answer = await run_request(
            pipeline, "chat/completions", ChatCompletionRequest, body=body, headers=headers, state={Enqueue.name: kind}
        )
        await parts.spawn.run()
        assert answer is not None
        return answer

    return asyncio.run(go())


def chat(content: str = "hi", model: str = A) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}]}


def test_a_job_is_stored_scrubbed_and_counted_as_one_request_without_tokens() -> None:
    parts = Parts()
    answer = submit(parts, chat(f"my key is {SECRET}"), kind="generate")
    assert answer.document is not None and answer.document.json() == {
        "job_id": "job_1",
        "status": "pending",
        "kind": "generate",
    }
    [(owner, kind, path, stored)] = parts.jobs.stored
    assert (owner, kind, path) == (LIMITED.key_id, "generate", "chat/completions")
    assert SECRET not in str(stored) and stored["model"] == A
    assert parts.limiter.asked == [(0, True, None, False)]  # its tokens are reserved when it runs
    assert parts.limiter.settled == []  # nothing held, nothing to settle


def test_an_auto_model_is_queued_and_chosen_when_the_job_runs() -> None:
    parts = Parts()
    submit(parts, chat(model="auto"))
    assert parts.jobs.stored[0][3]["model"] == "auto"


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (chat(), {}, 401, "invalid_api_key"),
        ({"model": A}, GOOD, 400, None),  # no messages
        (chat(model="fake/unknown"), GOOD, 404, "model_not_found"),
        (chat("x" * 3000), GOOD, 413, "request_too_large"),
    ],
)
def test_a_refused_submission_is_neither_counted_nor_stored(
    body: dict[str, Any], headers: Mapping[str, str], status: int, code: str | None
) -> None:
    parts = Parts()
    with pytest.raises(APIError) as refused:
        submit(parts, body, headers=headers)
    assert refused.value.status == status and (code is None or refused.value.code == code)
    assert parts.limiter.asked == [] and parts.jobs.stored == []


def test_a_key_with_as_many_unfinished_jobs_as_it_may_gets_429_too_many_jobs() -> None:
    parts = Parts(settings=Settings(job_max_queued_per_key=1))
    submit(parts, chat())
    with pytest.raises(APIError) as full:
        submit(parts, chat())
    error = full.value
    assert (error.status, error.code, error.type) == (429, "too_many_jobs", "requests")
    assert error.headers["retry-after"] == "5" and "x-ratelimit-limit-tokens" in error.headers
    assert len(parts.jobs.stored) == 1
