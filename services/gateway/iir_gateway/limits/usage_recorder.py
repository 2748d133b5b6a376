"""Counts requests and tokens per key, model and day in memory, and sends them to auth in batches."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import grpc

from iir.v1 import auth_pb2, auth_pb2_grpc

log = logging.getLogger(__name__)

_MAX_PENDING = 50_000  # distinct (key, model, day) rows kept while the auth service is away


class UsageRecorder:
    def __init__(self, channel: grpc.aio.Channel, interval_s: float = 1.0) -> None:
        self._stub = auth_pb2_grpc.AuthServiceStub(channel)
        self._interval = interval_s
        self._pending: defaultdict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
        self._day = (-1, "")

    def _today(self) -> str:
        day_number = int(time.time() // 86400)
        if day_number != self._day[0]:
            self._day = (day_number, datetime.now(UTC).strftime("%Y-%m-%d"))
        return self._day[1]

    def record(self, key_id: str, model: str, prompt_tokens: int, completion_tokens: int) -> None:
        row = self._pending[(key_id, model, self._today())]
        row[0] += 1
        row[1] += prompt_tokens
        row[2] += completion_tokens

    async def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, defaultdict(lambda: [0, 0, 0])
        records = [
            auth_pb2.UsageRecord(key_id=k, model=m, day=d, requests=r, prompt_tokens=p, completion_tokens=c)
            for (k, m, d), (r, p, c) in batch.items()
        ]
        try:
            await self._stub.RecordUsage(auth_pb2.RecordUsageRequest(records=records), timeout=10)
        except grpc.aio.AioRpcError as exc:
            log.warning(
                "usage not recorded yet; will retry", extra={"rows": len(records), "grpc_code": exc.code().name}
            )
            if len(self._pending) + len(batch) <= _MAX_PENDING:
                for key, (r, p, c) in batch.items():
                    row = self._pending[key]
                    row[0] += r
                    row[1] += p
                    row[2] += c

    async def run(self) -> None:
        await flush_every(self._interval, self.flush)


async def flush_every(interval_s: float, flush: Callable[[], Awaitable[None]]) -> None:
    """Calls `flush` every `interval_s` until cancelled, and once more then (what is pending is sent)."""
    try:
        while True:
            await asyncio.sleep(interval_s)
            await flush()
    finally:
        await asyncio.shield(flush())
