"""Runtime.start starts every background task of the gateway (watches, flushes, job worker, batch runner,
metrics server) and Runtime.stop ends every one of them: nothing it started is left running."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

from iir_dev import datastores
from iir_gateway.batches.runner import BatchRunner
from iir_gateway.cancelling import cancel_all
from iir_gateway.jobs.worker import JobWorker
from iir_gateway.runtime import Runtime
from iir_gateway.settings import GatewaySettings

# Where auth, registry and classifier would be: nothing listens, so their watches keep retrying.
_NOBODY = "127.0.0.1:1"


def _running(tasks: set[asyncio.Task[object]]) -> set[str]:
    return {task.get_name() for task in tasks if not task.done()}


async def test_stop_ends_every_task_that_start_began(redis_url: str) -> None:
    metrics_port = datastores.free_port()
    settings = GatewaySettings(
        redis_url=redis_url,
        auth_addr=_NOBODY,
        registry_addr=_NOBODY,
        classifier_addr=_NOBODY,
        metrics_port=metrics_port,
        job_workers=2,
        batch_concurrency=1,
        spend_journal=False,
    )
    before = asyncio.all_tasks()
    runtime = Runtime(settings)
    await runtime.start()
    started = asyncio.all_tasks() - before
    assert {"registry-watch", "key-events", "spend-flush", "job-worker-0", "job-worker-1"} <= _running(started)
    assert await asyncio.to_thread(datastores.port_open, "127.0.0.1", metrics_port)

    await runtime.stop()

    assert _running(asyncio.all_tasks() - before) == set()
    assert not await asyncio.to_thread(datastores.port_open, "127.0.0.1", metrics_port)


class _SwallowingRedis:
    """A Redis client that, as redis-py can when a cancel lands in its timeout handling, turns the
    cancellation of a waiting command into its own connection error."""

    def __init__(self) -> None:
        self.waiting = asyncio.Event()

    async def _command(self, *args: object, **kwargs: object) -> object:
        self.waiting.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise ConnectionError("Connection closed by server.") from None
        return None

    ensure_groups = smembers = _command


async def test_stop_ends_the_job_worker_and_batch_runner_when_the_cancel_comes_back_as_an_error() -> None:
    redis = _SwallowingRedis()
    store: Any = SimpleNamespace(ensure_groups=redis.ensure_groups)
    worker = JobWorker(cast(Any, None), store, cast(Any, None), concurrency=1, claim_idle_s=30)
    await worker.start()
    await asyncio.wait_for(redis.waiting.wait(), 10)
    await asyncio.wait_for(worker.stop(), 10)

    redis = _SwallowingRedis()
    batches: Any = SimpleNamespace(redis=redis, active="active")
    runner = BatchRunner(cast(Any, None), batches, cast(Any, None), cast(Any, None), concurrency=1)
    await runner.start()
    await asyncio.wait_for(redis.waiting.wait(), 10)
    await asyncio.wait_for(runner.stop(), 10)


async def test_cancel_all_ends_a_task_that_swallowed_a_cancel() -> None:
    swallowed = asyncio.Event()

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                if swallowed.is_set():
                    raise
                swallowed.set()  # as a library may, once: turned into its own error and retried

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_all([task], every_s=0.05), 10)
    assert swallowed.is_set() and task.cancelled()
