"""Spend records, one per request, sent to the auth service in batches off the request path.

Every record carries an id unique to it, so auth stores it once however often it is sent (a retry after
a timeout, a dead gateway's journal). With a journal (Redis), a record is kept there before it is
queued, and a running stream's record is kept there with what was relayed so far: a gateway that dies
loses no queued record, and of a stream at most what it relayed since its last checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable

import grpc

from iir.v1 import auth_pb2, auth_pb2_grpc
from iir_gateway.accounting.spend_journal import SpendJournal

log = logging.getLogger(__name__)

_MAX_PENDING = 100_000  # records kept while the auth service is away; the oldest go first beyond it
_BATCH = 5_000
_HEARTBEAT_S = 2.0
_TIMEOUT_S = 10.0  # for one RecordSpend call

# A running stream's record as it would be if the stream ended now; None while there is nothing to bill.
Snapshot = Callable[[], auth_pb2.SpendRecord | None]


class SpendRecorder:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        interval_s: float = 1.0,
        journal: SpendJournal | None = None,
        checkpoint_s: float = 5.0,
    ) -> None:
        self._stub = auth_pb2_grpc.AuthServiceStub(channel)
        self._interval = interval_s
        self._journal = journal
        self._checkpoint_s = checkpoint_s
        self._pending: deque[auth_pb2.SpendRecord] = deque()
        self._incoming: list[auth_pb2.SpendRecord] = []  # not in the journal yet
        self._streams: dict[str, Snapshot] = {}
        self._wake: asyncio.Event | None = None
        self._id_prefix = journal.gateway_id if journal is not None else os.urandom(8).hex()
        self._ids = itertools.count()
        self._forgetting: set[asyncio.Task[None]] = set()

    def new_id(self) -> str:
        """An id no other record has (this process's random prefix and a counter)."""
        return f"{self._id_prefix}-{next(self._ids):x}"

    def record(self, record: auth_pb2.SpendRecord) -> None:
        if not record.record_id:
            record.record_id = self.new_id()
        if self._journal is None:
            self._enqueue([record])
            return
        self._incoming.append(record)
        if self._wake is not None:
            self._wake.set()

    def track(self, record_id: str, snapshot: Snapshot) -> None:
        """A stream is running: its record (`snapshot()`, with this id) is kept in the journal every
        `checkpoint_s`, so a crash bills what it relayed until then. `untrack` before its final record."""
        if self._journal is not None:
            self._streams[record_id] = snapshot

    def untrack(self, record_id: str) -> None:
        self._streams.pop(record_id, None)

    def _enqueue(self, records: list[auth_pb2.SpendRecord]) -> None:
        overflow = len(self._pending) + len(records) - _MAX_PENDING
        if overflow > 0:
            dropped = [self._pending.popleft() for _ in range(min(overflow, len(self._pending)))]
            log.warning("spend records dropped: the auth service is away too long", extra={"rows": len(dropped)})
            if self._journal is not None:
                self._forget_later([r.record_id for r in dropped])
        self._pending.extend(records)

    def _forget_later(self, ids: list[str]) -> None:
        if self._journal is not None and ids:
            task = asyncio.get_running_loop().create_task(self._journal.forget(ids))
            self._forgetting.add(task)
            task.add_done_callback(self._forgetting.discard)

    async def _write_journal(self, checkpoints: bool) -> None:
        """The journal's only writer: the records made since, then queued; and the running streams."""
        batch, self._incoming = self._incoming, []
        snapshots = []
        if checkpoints:
            for snapshot in list(self._streams.values()):
                try:
                    record = snapshot()
                except Exception:  # one stream's snapshot failing must not stop the others'
                    log.exception("stream spend checkpoint failed")
                    continue
                if record is not None:
                    snapshots.append(record)
        try:
            if self._journal is not None and (batch or snapshots):
                await self._journal.write([*snapshots, *batch])
        finally:
            if batch:
                self._enqueue(batch)

    async def flush(self) -> None:
        while self._pending:
            batch = [self._pending.popleft() for _ in range(min(_BATCH, len(self._pending)))]
            try:
                await self._stub.RecordSpend(auth_pb2.RecordSpendRequest(records=batch), timeout=_TIMEOUT_S)
            except grpc.aio.AioRpcError as exc:
                # Sent again later: a batch that was stored after all (a timeout) is not stored twice.
                log.warning(
                    "spend not recorded yet; will retry", extra={"rows": len(batch), "grpc_code": exc.code().name}
                )
                self._pending.extendleft(reversed(batch))
                return
            if self._journal is not None:
                await self._journal.forget([r.record_id for r in batch])

    async def _journal_loop(self) -> None:
        self._wake = asyncio.Event()
        if self._incoming:
            self._wake.set()
        next_checkpoint = time.monotonic() + self._checkpoint_s
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_checkpoint - time.monotonic())):
                    await self._wake.wait()
            self._wake.clear()
            due = time.monotonic() >= next_checkpoint
            if due:
                next_checkpoint = time.monotonic() + self._checkpoint_s
            await self._write_journal(checkpoints=due)

    async def _watch_loop(self) -> None:
        """Keeps this gateway's heartbeat, and takes over the journals of gateways that are gone."""
        assert self._journal is not None
        while True:
            try:
                await self._journal.heartbeat()
                adopted = await self._journal.adopt()
                if adopted:
                    self._enqueue(adopted)
            except Exception:  # the next beat tries again; recording goes on meanwhile
                log.exception("spend journal watch failed")
            await asyncio.sleep(_HEARTBEAT_S)

    async def run(self) -> None:
        loops = [flush_every(self._interval, self.flush)]
        if self._journal is not None:
            loops += [self._journal_loop(), self._watch_loop()]
        try:
            await asyncio.gather(*loops)
        finally:
            await asyncio.shield(self._stop())

    async def _stop(self) -> None:
        if self._journal is not None:
            await self._write_journal(checkpoints=True)
            await self.flush()
            await self._journal.close()


async def flush_every(interval_s: float, flush: Callable[[], Awaitable[None]]) -> None:
    """Calls `flush` every `interval_s` until cancelled, and once more then (what is pending is sent)."""
    try:
        while True:
            await asyncio.sleep(interval_s)
            await flush()
    finally:
        await asyncio.shield(flush())
