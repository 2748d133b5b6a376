"""Job workers: each gateway process runs a few, reading the priority streams through one consumer group.

At-least-once: an entry is acked only when its job reached a final state. A worker that dies leaves its
entry pending; after `claim_idle_s` without a heartbeat any worker claims it and runs the job again
(a `restart` event tells followers to drop the tokens of the attempt before). In the normal case a job
runs once. Tokens are published to the job's event stream as they come, and the final completion is
stored with the job. A job runs as its key is now, not as it was when queued (keys/owners.py): a job
whose key was revoked, blocked or expired meanwhile is cancelled when picked up, or mid-answer, and a
restricted or budget-cut key's limits apply to it.
Workers survive Redis faults: they back off (logging once per outage), and recreate their consumer
groups when Redis comes back without them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from typing import Any

from redis.exceptions import ResponseError

from iir_gateway.answer import EventStream
from iir_gateway.caching.assembler import StreamAssembler
from iir_gateway.cancelling import cancel_all, current_task_cancelling
from iir_gateway.errors import APIError
from iir_gateway.jobs.store import BANDS, FINAL, GROUP, Job, JobStore
from iir_gateway.keys.owners import OwnerLookup, OwnerRefused
from iir_gateway.pipeline.entry import run_request
from iir_gateway.pipeline.pipeline import Pipeline
from iir_gateway.pipeline.rate_limit_waits import RateLimitWaits, Sleep
from iir_gateway.schemas import ChatCompletionRequest

log = logging.getLogger(__name__)

CANCEL_CHECK_S = 0.25
MAX_BACKOFF_S = 10.0


class JobWorker:
    def __init__(
        self,
        pipeline: Pipeline,
        store: JobStore,
        owners: OwnerLookup,
        concurrency: int,
        claim_idle_s: float,
        sleep: Sleep = asyncio.sleep,  # a rate-limited job's waits
    ) -> None:
        self.pipeline = pipeline
        self.store = store
        self.owners = owners
        self.concurrency = concurrency
        self.claim_idle_s = claim_idle_s
        self.sleep = sleep
        self.name = f"{socket.gethostname()}-{os.getpid()}"
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Starts the slots; they create the consumer groups themselves, once Redis answers."""
        self._tasks = [
            asyncio.create_task(self._slot(f"{self.name}-{i}"), name=f"job-worker-{i}") for i in range(self.concurrency)
        ]

    async def stop(self) -> None:
        await cancel_all(self._tasks)

    async def _slot(self, consumer: str) -> None:
        backoff = 0.0
        grouped = False
        while True:
            try:
                if not grouped:
                    await self.store.ensure_groups()
                    grouped = True
                entry = await self._next(consumer)
                if backoff:
                    log.info("job worker resumed", extra={"consumer": consumer})
                backoff = 0.0
                if entry is not None:
                    await self._run(consumer, *entry)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down or emptied, a bad entry: back off, go on
                if current_task_cancelling():  # a stop that a library turned into another error
                    raise asyncio.CancelledError from exc
                if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
                    grouped = False  # Redis restarted without our groups: make them again
                if not backoff:  # once per outage, not once per retry
                    log.warning("job worker error; backing off", extra={"error": repr(exc)[:300]})
                backoff = min(max(backoff * 2, 0.5), MAX_BACKOFF_S)
                await asyncio.sleep(backoff)

    async def _next(self, consumer: str) -> tuple[str, str, str] | None:
        """(stream, entry id, job id): a stale entry of a dead worker first, then the highest band."""
        redis = self.store.redis
        for name in BANDS:
            stream = self.store.stream(name)
            claimed = await redis.xautoclaim(
                stream, GROUP, consumer, min_idle_time=int(self.claim_idle_s * 1000), start_id="0-0", count=1
            )
            if claimed[1]:
                entry_id, fields = claimed[1][0]
                return stream, entry_id.decode(), fields[b"job"].decode()
        for name in BANDS:
            got = await redis.xreadgroup(GROUP, consumer, {self.store.stream(name): ">"}, count=1)
            if got:
                return self._entry(got)
        # Blocks for less than the client's 1 s socket timeout, or an idle queue reads as a Redis fault.
        streams: Any = {self.store.stream(n): ">" for n in BANDS}
        got = await redis.xreadgroup(GROUP, consumer, streams, count=1, block=500)
        return self._entry(got) if got else None

    @staticmethod
    def _entry(got: Any) -> tuple[str, str, str]:
        stream, entries = got[0]
        entry_id, fields = entries[0]
        return stream.decode(), entry_id.decode(), fields[b"job"].decode()

    async def _heartbeat(self, stream: str, consumer: str, entry_id: str) -> None:
        """Keeps the entry claimed by this worker while the job runs."""
        while True:
            await asyncio.sleep(self.claim_idle_s / 3)
            await self.store.redis.xclaim(stream, GROUP, consumer, min_idle_time=0, message_ids=[entry_id], justid=True)

    async def _run(self, consumer: str, stream: str, entry_id: str, job_id: str) -> None:
        job = await self.store.get(job_id)
        if job is None or job.status in FINAL:
            await self.store.redis.xack(stream, GROUP, entry_id)
            return
        heartbeat = asyncio.create_task(self._heartbeat(stream, consumer, entry_id))
        try:
            await self._execute(job)
            await self.store.redis.xack(stream, GROUP, entry_id)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await heartbeat

    async def _refused(self, job: Job, refused: OwnerRefused) -> None:
        """Cancels the job of a key that may no longer run it."""
        log.info("job cancelled: its key was refused", extra={"job_id": job.id, "reason": refused.reason})
        error = _job_error(APIError(401, f"The job was cancelled: {refused.why}.", code=refused.code))
        await self._finish(job, "cancelled", error=error)

    async def _execute(self, job: Job) -> None:
        store = self.store
        try:
            # Auth unreachable: APIError 503 is raised, and the entry stays pending for a later try.
            await self.owners.current(job.caller())
        except OwnerRefused as refused:
            await self._refused(job, refused)
            return
        attempt = job.attempts + 1
        now = time.time()
        await store.update(job.id, status="running", started_at=job.started_at or now, attempts=attempt)
        if attempt > 1:  # followers must drop what the attempt before streamed
            await store.add_event(
                job.id,
                "restart",
                {"attempt": attempt, "message": "A new attempt starts; discard the tokens received so far."},
            )
        await store.add_event(job.id, "status", {"status": "running", "attempt": attempt})
        log.info("job started", extra={"job_id": job.id, "attempt": attempt})
        body = {**job.request, "stream": True, "stream_options": {"include_usage": True}}
        assembler = StreamAssembler()
        try:
            stream = await self._serve(job, body)
            cancelled = await self._relay(job, stream, assembler)
        except OwnerRefused as refused:
            await self._refused(job, refused)
            return
        except APIError as exc:
            await self._finish(job, "failed", error=_job_error(exc))
            return
        if cancelled:
            log.info("job cancelled", extra={"job_id": job.id})
            return
        completion = assembler.completion()
        if completion is None:
            broke = APIError(502, "The upstream stream broke off.", code="upstream_error")
            await self._finish(job, "failed", error=_job_error(broke))
            return
        await self._finish(job, "completed", result=completion)

    async def _serve(self, job: Job, body: dict[str, Any]) -> EventStream:
        """The job's request on its owner's behalf, as the key is now (its request was counted against
        the key's RPM when it was queued, its tokens are counted now); a rate-limited one waits as
        `pipeline/rate_limit_waits.py` says. OwnerRefused when the key may no longer run it."""
        waits = RateLimitWaits(self.sleep)
        while True:
            principal = await self.owners.current(job.caller())  # asked again after each wait
            try:
                answer = await run_request(
                    self.pipeline,
                    job.path,
                    ChatCompletionRequest,
                    body=body,
                    principal=principal,
                    count_request=False,
                    request_id=job.id,  # vLLM names its answer after it (`chatcmpl-<request id>`)
                )
            except APIError as exc:
                if await waits.after(exc):
                    continue
                raise
            assert answer is not None  # no client to leave: only a watched request ends without one
            if answer.stream is None:
                raise APIError(502, "The model did not stream its answer.", code="upstream_error")
            return answer.stream

    async def _relay(self, job: Job, stream: EventStream, assembler: StreamAssembler) -> bool:
        """Publishes the answer's events as token events; True when the job was cancelled meanwhile,
        OwnerRefused when its key was revoked or blocked meanwhile (the answer is cut)."""
        job_id = job.id
        checked = time.monotonic()
        try:
            async for event in stream:
                chunk = event.json()
                assembler.add(chunk)
                await self.store.add_event(job_id, "token", chunk)
                if time.monotonic() - checked > CANCEL_CHECK_S:
                    checked = time.monotonic()
                    status = await self.store.redis.hget(self.store.key(job_id), "status")
                    if status == b"cancelled":
                        return True
                    with contextlib.suppress(APIError):  # auth away: the answer goes on
                        await self.owners.current(job.caller())  # cached: no call while the key is unchanged
        finally:
            await stream.aclose()  # ends the upstream call (a cancelled job stops generating)
        return False

    async def _finish(self, job: Job, status: str, **fields: Any) -> None:
        if not await self.store.finish(job, status, **fields):
            return  # cancelled meanwhile: that was final
        await self.store.add_event(job.id, "status", {"status": status, **fields})
        log.info("job finished", extra={"job_id": job.id, "status": status})


def _job_error(error: APIError) -> dict[str, Any]:
    """A job's `error`: OpenAI's error object and the HTTP status a request would have had."""
    return {**error.error_object(), "status": error.status}
