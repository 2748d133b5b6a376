"""Whether the running task was asked to stop, even when a library swallowed the cancellation.

A cancel that lands inside a client library's own timeout handling (redis-py's connect and read) can come
back as that library's error; a loop that retries on errors would then run on after `Task.cancel()`, and
whoever awaits it would wait for ever. Such loops ask this before they retry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


def current_task_cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def cancel_all(tasks: Iterable[asyncio.Task[Any]], every_s: float = 1.0) -> None:
    """Cancels `tasks` and waits until every one has ended, cancelling again every `every_s` those still
    running: a cancel swallowed once (see above) must not leave a task, and whoever stops it, running."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=every_s)
