"""A client that leaves while its (non-streamed) answer is made: the run is cancelled and nothing is
answered; a fast answer needs no watcher; a cancellation from the server still propagates."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from iir_gateway.answer import Answer
from iir_gateway.pipeline import entry as inference


def _receive(disconnect: asyncio.Event) -> Callable[[], Awaitable[dict[str, str]]]:
    async def receive() -> dict[str, str]:
        await disconnect.wait()
        return {"type": "http.disconnect"}

    return receive


async def test_a_client_that_leaves_cancels_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inference, "WATCH_AFTER_S", 0.01)
    body_read, disconnect = asyncio.Event(), asyncio.Event()
    cancelled = asyncio.Event()

    async def slow() -> Answer:
        body_read.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return Answer("m")

    asyncio.get_running_loop().call_later(0.05, disconnect.set)
    assert await inference._unless_client_leaves(slow(), _receive(disconnect), body_read) is None
    assert cancelled.is_set()
    await asyncio.sleep(0)  # this task is not left cancelled: it goes on
    task = asyncio.current_task()
    assert task is not None and not task.cancelling()


async def test_a_fast_answer_and_a_server_cancel() -> None:
    body_read, disconnect = asyncio.Event(), asyncio.Event()

    answer = Answer("m")

    async def fast() -> Answer:
        return answer

    assert await inference._unless_client_leaves(fast(), _receive(disconnect), body_read) is answer

    async def forever() -> Answer:
        await asyncio.sleep(10)
        return answer

    task = asyncio.ensure_future(inference._unless_client_leaves(forever(), _receive(disconnect), body_read))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
