"""Micro-batching: concurrent requests are classified together in one encoder call, off the event loop."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from iir_classifier.model import Classification, Classifier

Conversation = list[tuple[str, str]]


class MicroBatcher:
    """Classifies requests in batches: what queued up while the previous batch ran, up to `max_batch`.

    One batch runs at a time on a worker thread (onnxruntime releases the GIL), so the gRPC loop keeps
    accepting requests, which form the next batch; a lone request waits for nobody. `max_wait_s` > 0
    holds the first request of a batch that long for company.
    """

    def __init__(self, classifier: Classifier, max_batch: int = 16, max_wait_s: float = 0.0) -> None:
        self.classifier = classifier
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._queue: asyncio.Queue[tuple[Conversation, asyncio.Future[Classification]]] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="classify")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="classify-batches")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=False)

    async def classify(self, conversation: Conversation) -> Classification:
        future: asyncio.Future[Classification] = asyncio.get_running_loop().create_future()
        await self._queue.put((conversation, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            if self.max_wait_s > 0:
                await asyncio.sleep(self.max_wait_s)
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            live = [(c, f) for c, f in batch if not f.done()]  # callers that gave up are skipped
            if not live:
                continue
            try:
                results = await loop.run_in_executor(
                    self._executor, self.classifier.classify_batch, [c for c, _ in live]
                )
            except Exception as exc:  # one bad batch fails its callers, not the service
                for _, f in live:
                    if not f.done():
                        f.set_exception(exc)
                continue
            for (_, f), result in zip(live, results, strict=True):
                if not f.done():
                    f.set_result(result)
