"""A batch line's run with a fake pipeline: its result, its error written as an HTTP error body writes it
(a 429 without an explicit type reads `rate_limit_error` in both), a rate limit waited out."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import orjson

from iir_gateway.answer import Answer, Event
from iir_gateway.batches.runner import BatchRunner
from iir_gateway.errors import APIError
from iir_gateway.principal import Principal
from tests.unit.fakes import PRINCIPAL, FakePipeline, completion

BODY = {"model": "fake/a", "messages": [{"role": "user", "content": "hi"}]}


class Owners:
    async def current(self, made_by: Principal, **changes: object) -> Principal:
        return dataclasses.replace(made_by, **changes)  # type: ignore[arg-type]


def run_line(
    outcomes: list[Answer | APIError], endpoint: str = "/v1/chat/completions", body: dict[str, Any] = BODY
) -> tuple[dict[str, Any], FakePipeline, list[float]]:
    pipeline, slept = FakePipeline(outcomes), []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    runner = BatchRunner(pipeline, None, None, Owners(), 1, sleep=sleep)  # type: ignore[arg-type]
    line = asyncio.run(runner._line("batch_1", endpoint, PRINCIPAL, "c1", body, ""))
    return line, pipeline, slept


def test_a_line_runs_as_its_owner_at_priority_zero_and_keeps_the_completion() -> None:
    line, pipeline, _ = run_line([Answer("fake/a", document=Event.of(completion()))])
    assert line["error"] is None and line["response"]["status_code"] == 200
    assert line["response"]["body"]["choices"][0]["message"]["content"] == "hello"
    ctx = pipeline.contexts[0]
    assert ctx.principal is not None and ctx.principal.priority == 0 and ctx.request_id == "batch_1-c1"


def test_a_rate_limit_without_a_type_reads_rate_limit_error_in_the_line_as_over_http() -> None:
    refused = APIError(429, "saturated", code="model_saturated")  # no retry-after: not waited for
    line, _, slept = run_line([refused])
    error = line["response"]["body"]["error"]
    assert line["response"]["status_code"] == 429 and slept == []
    assert error == {"message": "saturated", "type": "rate_limit_error", "param": None, "code": "model_saturated"}
    assert orjson.loads(refused.response().body)["error"] == error


def test_a_rate_limited_line_waits_for_its_retry_after_and_runs_again() -> None:
    limited = APIError(429, "tokens", code="rate_limit_exceeded", headers={"retry-after": "4"})
    line, pipeline, slept = run_line([limited, Answer("fake/a", document=Event.of(completion()))])
    assert line["response"]["status_code"] == 200 and len(pipeline.contexts) == 2 and slept == [4.0]


def test_a_used_up_budget_fails_the_line_at_once() -> None:
    spent = APIError(429, "budget", code="insufficient_quota", type="insufficient_quota", headers={"retry-after": "9"})
    line, _, slept = run_line([spent])
    assert line["response"]["body"]["error"]["code"] == "insufficient_quota" and slept == []


def test_a_responses_line_runs_as_a_chat_request_and_keeps_a_response_that_is_not_stored() -> None:
    body = {"model": "fake/a", "input": "hi", "instructions": "Be brief.", "store": True}
    line, pipeline, _ = run_line([Answer("fake/a", document=Event.of(completion()))], "/v1/responses", body)
    assert pipeline.contexts[0].body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]
    assert pipeline.contexts[0].body["stream"] is False
    response = line["response"]["body"]
    assert line["response"]["status_code"] == 200 and response["object"] == "response"
    assert response["id"].startswith("resp_") and response["store"] is False and response["instructions"] == "Be brief."
    assert response["output"][0]["content"][0]["text"] == "hello" and response["usage"]["total_tokens"] == 5


def test_a_responses_line_cannot_continue_a_stored_response() -> None:
    body = {"model": "fake/a", "input": "hi", "previous_response_id": "resp_1"}
    line, pipeline, _ = run_line([], "/v1/responses", body)
    assert line["response"]["status_code"] == 400 and pipeline.contexts == []
    assert line["response"]["body"]["error"]["param"] == "previous_response_id"
