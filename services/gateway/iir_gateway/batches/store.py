"""Batches (`/v1/batches`) in Redis: the batch object as OpenAI writes it, its owner, the result of each
line by its position (set once: a line run twice after a crash is still written once; deleted once the
output and error files hold them), and a lease that one gateway process holds while it runs the batch."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import redis.asyncio as aioredis

from iir_gateway.principal import Principal

FINAL = ("completed", "failed", "expired", "cancelled")
WINDOW_S = {"24h": 86400}
# How long a batch counts among its key's unfinished ones (and its results in the storage quotas) at most:
# its window, and an hour to write its files.
QUOTA_TTL_S = max(WINDOW_S.values()) + 3600


def batch_object(batch_id: str, endpoint: str, input_file_id: str, window: str, metadata: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "id": batch_id,
        "object": "batch",
        "endpoint": endpoint,
        "errors": None,
        "input_file_id": input_file_id,
        "completion_window": window,
        "status": "validating",
        "output_file_id": None,
        "error_file_id": None,
        "created_at": now,
        "in_progress_at": None,
        "expires_at": now + WINDOW_S[window],
        "finalizing_at": None,
        "completed_at": None,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": None,
        "cancelled_at": None,
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
        "metadata": metadata,
    }


_READ_LINES = 100  # results read from Redis at once when the output is written
# Sets a line's result once; counts it and its bytes. ARGV: index, result, counter, ttl. Answers the bytes of
# all the results, or -1 when the line had one.
_ADD = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return -1 end
redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
local total = redis.call('HINCRBY', KEYS[2], 'bytes', #ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return total
"""


class BatchStore:
    def __init__(self, redis: aioredis.Redis, prefix: str, ttl_s: int) -> None:
        self.redis, self.prefix, self.ttl_s = redis, prefix, ttl_s
        self._add = redis.register_script(_ADD)

    def key(self, batch_id: str) -> str:
        return f"{self.prefix}batches:{batch_id}"

    def results(self, batch_id: str) -> str:
        return f"{self.prefix}batches:{batch_id}:results"

    @property
    def active(self) -> str:
        return f"{self.prefix}batches:active"

    def _owned(self, owner: str) -> str:
        return f"{self.prefix}batches:owner:{owner}"

    async def create(self, principal: Principal, batch: dict[str, Any]) -> None:
        record = {"owner": principal.key_id, "principal": principal.to_dict(), "batch": batch}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.key(batch["id"]), orjson.dumps(record), ex=self.ttl_s)
            pipe.zadd(self._owned(principal.key_id), {batch["id"]: batch["created_at"]})
            pipe.expire(self._owned(principal.key_id), self.ttl_s)
            pipe.sadd(self.active, batch["id"])
            await pipe.execute()

    async def record(self, batch_id: str) -> dict[str, Any] | None:
        raw: Any = await self.redis.get(self.key(batch_id))
        return orjson.loads(raw) if raw is not None else None

    async def get(self, batch_id: str, principal: Principal) -> dict[str, Any] | None:
        record = await self.record(batch_id)
        if record is None or (record["owner"] != principal.key_id and not principal.admin):
            return None
        batch: dict[str, Any] = record["batch"]
        if batch["status"] in ("in_progress", "cancelling", "finalizing"):  # the counts so far
            counts: Any = await self.redis.hgetall(self.counts(batch_id))
            batch["request_counts"] |= {k.decode(): int(v) for k, v in counts.items() if k != b"bytes"}
        return batch

    async def list(self, principal: Principal, after: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
        members: Any = await self.redis.zrevrange(self._owned(principal.key_id), 0, 9999)
        ids = [i.decode() for i in members]
        if after and after in ids:
            ids = ids[ids.index(after) + 1 :]
        page = []
        for batch_id in ids[: limit + 1]:
            batch = await self.get(batch_id, principal)
            if batch is not None:
                page.append(batch)
        return page[:limit], len(page) > limit

    async def change(self, batch_id: str, change: Any) -> dict[str, Any] | None:
        """Applies `change(batch)` (a dict of fields, or None to leave it) atomically: the runner and a
        cancel may write at once. The batch as it is then, or None when it does not exist."""
        key = self.key(batch_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw: Any = await pipe.get(key)
                    if raw is None:
                        return None
                    record = orjson.loads(raw)
                    fields = change(record["batch"])
                    if fields:
                        record["batch"].update(fields)
                        pipe.multi()
                        pipe.set(key, orjson.dumps(record), ex=self.ttl_s)
                        await pipe.execute()
                    batch: dict[str, Any] = record["batch"]
                    return batch
                except aioredis.WatchError:
                    continue  # written meanwhile: look again

    async def update(self, batch_id: str, **fields: Any) -> dict[str, Any] | None:
        """Sets fields of the batch object."""
        return await self.change(batch_id, lambda _: fields)

    async def cancel(self, batch_id: str) -> dict[str, Any] | None:
        """Marks the batch `cancelling` unless it is already finishing or final."""

        def cancelling(batch: dict[str, Any]) -> dict[str, Any] | None:
            if batch["status"] in (*FINAL, "finalizing", "cancelling"):
                return None
            return {"status": "cancelling", "cancelling_at": int(time.time())}

        return await self.change(batch_id, cancelling)

    async def add_result(self, batch_id: str, index: int, line: dict[str, Any], ok: bool) -> int:
        """The result of line `index`, counted as completed or failed: the bytes of all the batch's results
        now, or -1 when the line had one already."""
        raw = orjson.dumps(line)
        added: Any = await self._add(
            keys=[self.results(batch_id), self.counts(batch_id)],
            args=[str(index), raw, "completed" if ok else "failed", self.ttl_s],
        )
        return int(added)

    def counts(self, batch_id: str) -> str:
        return f"{self.prefix}batches:{batch_id}:counts"

    async def result_indexes(self, batch_id: str) -> set[int]:
        """The lines that have a result."""
        raw: Any = await self.redis.hkeys(self.results(batch_id))
        return {int(k) for k in raw}

    async def results_in_order(self, batch_id: str, lines: int) -> AsyncIterator[tuple[int, bytes]]:
        """(index, result as stored) of each line with one, in the input's order, read a few at a time."""
        for start in range(0, lines, _READ_LINES):
            fields = [str(i) for i in range(start, min(start + _READ_LINES, lines))]
            got: Any = await self.redis.hmget(self.results(batch_id), fields)
            for field, raw in zip(fields, got, strict=True):
                if raw is not None:
                    yield int(field), bytes(raw)

    async def drop_results(self, batch_id: str) -> None:
        """Deletes the lines' results (once they are in the output and error files) and their counts."""
        await self.redis.delete(self.results(batch_id), self.counts(batch_id))

    async def lease(self, batch_id: str, holder: str, ttl_s: float) -> bool:
        """Takes or renews the batch's lease for `holder`."""
        key = f"{self.key(batch_id)}:lease"
        if await self.redis.set(key, holder, nx=True, px=int(ttl_s * 1000)):
            return True
        current: Any = await self.redis.get(key)
        if current is not None and current.decode() == holder:
            await self.redis.pexpire(key, int(ttl_s * 1000))
            return True
        return False

    async def release(self, batch_id: str) -> None:
        await self.redis.delete(f"{self.key(batch_id)}:lease")

    async def done(self, batch_id: str) -> None:
        await self.redis.srem(self.active, batch_id)

    @staticmethod
    def new_id() -> str:
        return f"batch_{uuid.uuid4().hex}"
