"""What the job routes and the task routes share: queueing a job through the submission pipeline, finding
a key's job, and reading a job's events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import Request
from starlette.responses import StreamingResponse

from iir_gateway.errors import APIError
from iir_gateway.inference.asgi_answer import SSE_HEADERS
from iir_gateway.jobs.store import FINAL, Job, JobStore
from iir_gateway.pipeline.context import BodyReader
from iir_gateway.pipeline.entry import run_request
from iir_gateway.pipeline.pipeline import Pipeline
from iir_gateway.pipeline.steps.enqueue import Enqueue
from iir_gateway.principal import Principal
from iir_gateway.schemas import ChatCompletionRequest
from iir_gateway.server.bodies import client_ip


async def submit(
    submission: Pipeline,
    request: Request,
    kind: str,
    *,
    body: dict[str, Any] | None = None,
    read_body: BodyReader | None = None,
    principal: Principal | None = None,
) -> dict[str, Any]:
    """Queues a job of `kind` (`chat`, `generate`, `infer`): its public document."""
    answer = await run_request(
        submission,
        "chat/completions",
        ChatCompletionRequest,
        body=body,
        read_body=read_body,
        headers=request.headers,
        client_ip=client_ip(request),
        principal=principal,
        state={Enqueue.name: kind},
    )
    assert answer is not None and answer.document is not None  # unwatched, and a document
    return answer.document.json()


async def owned(jobs: JobStore, principal: Principal, job_id: str) -> Job:
    """The key's job `job_id`; 404 when there is none."""
    job = await jobs.owned(job_id, principal)
    if job is None:
        raise APIError(404, f"No job `{job_id}`.", code="job_not_found")
    return job


async def job_events(jobs: JobStore, job_id: str) -> AsyncIterator[tuple[str, bytes]]:
    """The job's events (kind, JSON) from the start, then as they come, until it is final; ("", b"")
    while nothing happens, for a keep-alive."""
    key = jobs.events(job_id)
    last = "0-0"
    while True:
        got: Any = await jobs.redis.xread({key: last}, block=5000, count=100)
        if not got:
            job = await jobs.get(job_id)
            if job is None or job.status in FINAL:
                return
            yield "", b""
            continue
        for entry_id, fields in got[0][1]:
            last = entry_id.decode()
            kind = fields[b"kind"].decode()
            yield kind, fields[b"data"]
            if kind == "status" and orjson.loads(fields[b"data"]).get("status") in FINAL:
                return


def event_stream(frames: AsyncIterator[bytes]) -> StreamingResponse:
    """Server-sent events of `frames`."""
    return StreamingResponse(frames, media_type="text/event-stream", headers=SSE_HEADERS)
