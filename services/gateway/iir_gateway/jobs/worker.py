"""Job workers: each gateway process runs a few, reading the priority streams through one consumer group.

At-least-once: an entry is acked only when its job reached a final state. A worker that dies leaves its
entry pending; after `claim_idle_s` without a heartbeat any worker claims it and runs the job again
(its events say so). In the normal case a job runs once. Tokens are published to the job's event
stream as they come, and the final completion is stored with the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from typing import Any

from starlette.responses import StreamingResponse

from iir_gateway.api.inference import serve_as
from iir_gateway.errors import APIError
from iir_gateway.gateway import Gateway
from iir_gateway.jobs.store import BANDS, FINAL, GROUP, Job, JobStore
from iir_gateway.response_cache import StreamAssembler
from iir_gateway.schemas import ChatCompletionRequest

log = logging.getLogger(__name__)

CANCEL_CHECK_S = 0.25


class JobWorker:
    def __init__(self, gw: Gateway, store: JobStore, concurrency: int, claim_idle_s: float) -> None:
        self.gw = gw
        self.store = store
        self.concurrency = concurrency
        self.claim_idle_s = claim_idle_s
        self.name = f"{socket.gethostname()}-{os.getpid()}"
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.store.ensure_groups()
        self._tasks = [asyncio.create_task(self._slot(f"{self.name}-{i}"), name=f"job-worker-{i}")
                       for i in range(self.concurrency)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _slot(self, consumer: str) -> None:
        while True:
            try:
                entry = await self._next(consumer)
                if entry is not None:
                    await self._run(consumer, *entry)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down, a bad entry: log, wait, go on
                log.warning("job worker error", extra={"error": repr(exc)})
                await asyncio.sleep(1.0)

    async def _next(self, consumer: str) -> tuple[str, str, str] | None:
        """(stream, entry id, job id): a stale entry of a dead worker first, then the highest band."""
        redis = self.store.redis
        for name in BANDS:
            stream = self.store.stream(name)
            claimed = await redis.xautoclaim(stream, GROUP, consumer, min_idle_time=int(self.claim_idle_s * 1000),
                                             start_id="0-0", count=1)
            if claimed[1]:
                entry_id, fields = claimed[1][0]
                return stream, entry_id.decode(), fields[b"job"].decode()
        for name in BANDS:
            got = await redis.xreadgroup(GROUP, consumer, {self.store.stream(name): ">"}, count=1)
            if got:
                return self._entry(got)
        got = await redis.xreadgroup(GROUP, consumer, {self.store.stream(n): ">" for n in BANDS}, count=1,
                                     block=1000)
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
            await self.store.redis.xclaim(stream, GROUP, consumer, min_idle_time=0, message_ids=[entry_id],
                                          justid=True)

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

    async def _execute(self, job: Job) -> None:
        store = self.store
        attempt = job.attempts + 1
        now = time.time()
        await store.update(job.id, status="running", started_at=job.started_at or now, attempts=attempt)
        await store.add_event(job.id, "status", {"status": "running", "attempt": attempt})
        log.info("job started", extra={"job_id": job.id, "attempt": attempt})
        body = {**job.request, "stream": True, "stream_options": {"include_usage": True}}
        assembler = StreamAssembler()
        try:
            response = await serve_as(self.gw, job.caller(), body, ChatCompletionRequest, job.path)
            if not isinstance(response, StreamingResponse):
                raise APIError(502, "The model did not stream its answer.", code="upstream_error")
            cancelled = await self._relay(job.id, response, assembler)
        except APIError as exc:
            error = {"message": exc.message, "type": exc.type or "api_error", "code": exc.code, "status": exc.status}
            await self._finish(job.id, "failed", error=error)
            return
        if cancelled:
            log.info("job cancelled", extra={"job_id": job.id})
            return
        completion = assembler.completion()
        if completion is None:
            await self._finish(job.id, "failed", error={"message": "The upstream stream broke off.",
                                                        "type": "upstream_error", "code": "upstream_error",
                                                        "status": 502})
            return
        await self._finish(job.id, "completed", result=completion)

    async def _relay(self, job_id: str, response: StreamingResponse, assembler: StreamAssembler) -> bool:
        """Publishes the answer's chunks as token events; True when the job was cancelled meanwhile."""
        iterator = response.body_iterator
        checked = time.monotonic()
        try:
            async for chunk in iterator:
                for event in assembler.feed(chunk if isinstance(chunk, bytes) else chunk.encode()):
                    await self.store.add_event(job_id, "token", event)
                if time.monotonic() - checked > CANCEL_CHECK_S:
                    checked = time.monotonic()
                    status = await self.store.redis.hget(self.store.key(job_id), "status")
                    if status == b"cancelled":
                        return True
        finally:
            close = getattr(iterator, "aclose", None)
            if close is not None:
                await close()  # ends the upstream call (a cancelled job stops generating)
        return False

    async def _finish(self, job_id: str, status: str, **fields: Any) -> None:
        current = await self.store.redis.hget(self.store.key(job_id), "status")
        if current == b"cancelled":
            return
        await self.store.update(job_id, status=status, finished_at=time.time(), **fields)
        await self.store.add_event(job_id, "status", {"status": status, **fields})
        log.info("job finished", extra={"job_id": job_id, "status": status})
