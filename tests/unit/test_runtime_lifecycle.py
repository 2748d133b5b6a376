"""Runtime.start starts every background task of the gateway (watches, flushes, job worker, batch runner,
metrics server) and Runtime.stop ends every one of them: nothing it started is left running."""

from __future__ import annotations

import asyncio

from iir_dev import datastores
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
