"""The last step of a job's submission: the job stored (its request as the steps before left it: valid,
within its size, scrubbed) and queued, answered with the job's document (`{"job_id", "status", ...}`);
429 `too_many_jobs` when its key has as many unfinished jobs as it may. The caller names the job's kind
(`chat`, `generate`, `infer`) in `ctx.state["enqueue"]`."""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from iir_gateway.answer import Answer, Event
from iir_gateway.errors import APIError
from iir_gateway.pipeline.context import RequestContext
from iir_gateway.pipeline.step import Step
from iir_gateway.principal import Principal

QUEUE_FULL_RETRY_S = 5


class QueuedJob(Protocol):
    def public(self) -> dict[str, Any]:
        """What the owner sees of the job."""
        ...


class JobQueue(Protocol):
    async def submit(
        self, principal: Principal, kind: str, path: str, request: dict[str, Any], max_queued: int = 0
    ) -> QueuedJob | None:
        """Stores and queues the job; None when its owner has `max_queued` unfinished ones (0: no bound)."""
        ...


class Enqueue(Step):
    name = "enqueue"

    def __init__(self, jobs: JobQueue, max_queued: int) -> None:
        self.jobs = jobs
        self.max_queued = max_queued

    async def before(self, ctx: RequestContext) -> Answer | None:
        assert ctx.principal is not None
        job = await self.jobs.submit(ctx.principal, ctx.state[self.name], ctx.operation, ctx.body, self.max_queued)
        if job is None:
            raise APIError(
                429,
                f"This key has {self.max_queued} unfinished jobs already; wait for some to finish.",
                code="too_many_jobs",
                type="requests",
                headers={"retry-after": str(QUEUE_FULL_RETRY_S)},
            )
        return Answer(ctx.model, document=Event(orjson.dumps(job.public())))
