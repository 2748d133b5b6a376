"""Whether the running task was asked to stop, even when a library swallowed the cancellation.

A cancel that lands inside a client library's own timeout handling (redis-py's connect and read) can come
back as that library's error; a loop that retries on errors would then run on after `Task.cancel()`, and
whoever awaits it would wait for ever. Such loops ask this before they retry.
"""

from __future__ import annotations

import asyncio


def current_task_cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
