"""Spend records, one per request, sent to the auth service in batches off the request path."""

from __future__ import annotations

import logging
from collections import deque

import grpc

from iir.v1 import auth_pb2, auth_pb2_grpc
from iir_gateway.limits.usage_recorder import flush_every

log = logging.getLogger(__name__)

_MAX_PENDING = 100_000  # records kept while the auth service is away; the oldest go first beyond it
_BATCH = 5_000


class SpendRecorder:
    def __init__(self, channel: grpc.aio.Channel, interval_s: float = 1.0) -> None:
        self._stub = auth_pb2_grpc.AuthServiceStub(channel)
        self._interval = interval_s
        self._pending: deque[auth_pb2.SpendRecord] = deque(maxlen=_MAX_PENDING)

    def record(self, record: auth_pb2.SpendRecord) -> None:
        self._pending.append(record)

    async def flush(self) -> None:
        while self._pending:
            batch = [self._pending.popleft() for _ in range(min(_BATCH, len(self._pending)))]
            try:
                await self._stub.RecordSpend(auth_pb2.RecordSpendRequest(records=batch), timeout=10)
            except grpc.aio.AioRpcError as exc:
                log.warning(
                    "spend not recorded yet; will retry", extra={"rows": len(batch), "grpc_code": exc.code().name}
                )
                self._pending.extendleft(reversed(batch))
                return

    async def run(self) -> None:
        await flush_every(self._interval, self.flush)
