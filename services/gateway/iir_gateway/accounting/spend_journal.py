"""A gateway's spend records not yet stored by the auth service, kept in Redis so that they outlive it.

Each gateway process has a hash (field: the record's id, value: the record) and a heartbeat key. A
record is written before it is queued for sending and deleted once auth stored it; a running stream's
record is written again every few seconds with what was relayed so far. When a gateway's heartbeat
lapses (it crashed), another one moves its hash into its own, atomically, and sends those records:
auth stores each record id once, so a record sent twice, or by two gateways, counts once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from iir.v1 import auth_pb2

log = logging.getLogger(__name__)

# KEYS: the dead gateway's journal, its heartbeat, the set of journals, this gateway's journal.
# ARGV: the dead gateway's id. Returns its records (field, value, ...), now in this gateway's journal.
_ADOPT = """
if redis.call('EXISTS', KEYS[2]) == 1 then return {} end
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 1000 do
  redis.call('HSET', KEYS[4], unpack(all, i, math.min(i + 999, #all)))
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[3], ARGV[1])
return all
"""


class SpendJournal:
    def __init__(self, redis: aioredis.Redis, prefix: str, gateway_id: str, alive_s: float = 10.0) -> None:
        self.redis = redis
        self.gateway_id = gateway_id
        self.alive_s = alive_s
        self._prefix = f"{prefix}spend:"
        self._members = f"{prefix}spend:journals"
        self._key = self._journal(gateway_id)
        self._adopt = redis.register_script(_ADOPT)

    def _journal(self, gateway_id: str) -> str:
        return f"{self._prefix}journal:{gateway_id}"

    def _alive(self, gateway_id: str) -> str:
        return f"{self._prefix}alive:{gateway_id}"

    async def write(self, records: Sequence[auth_pb2.SpendRecord]) -> bool:
        """Keeps (or replaces) `records`; False when Redis refused (they then live in memory only)."""
        if not records:
            return True
        try:
            await self.redis.hset(self._key, mapping={r.record_id: r.SerializeToString() for r in records})
        except (RedisError, OSError) as exc:
            log.warning("spend journal not written", extra={"rows": len(records), "error": repr(exc)[:200]})
            return False
        return True

    async def forget(self, record_ids: Sequence[str]) -> None:
        """The records auth stored."""
        if not record_ids:
            return
        try:
            await self.redis.hdel(self._key, *record_ids)
        except (RedisError, OSError) as exc:
            # Left behind, they are sent again after this gateway is gone, and stored once.
            log.warning("spend journal not trimmed", extra={"rows": len(record_ids), "error": repr(exc)[:200]})

    async def heartbeat(self) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.set(self._alive(self.gateway_id), b"1", ex=max(1, round(self.alive_s)))
                pipe.sadd(self._members, self.gateway_id)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("spend journal heartbeat failed", extra={"error": repr(exc)[:200]})

    async def adopt(self) -> list[auth_pb2.SpendRecord]:
        """The records of gateways whose heartbeat lapsed, moved into this gateway's journal."""
        try:
            members = await self.redis.smembers(self._members)
        except (RedisError, OSError) as exc:
            log.warning("spend journals not read", extra={"error": repr(exc)[:200]})
            return []
        records: list[auth_pb2.SpendRecord] = []
        for raw in members:
            other = raw.decode() if isinstance(raw, bytes) else str(raw)
            if other == self.gateway_id:
                continue
            keys = [self._journal(other), self._alive(other), self._members, self._key]
            try:
                found: list[Any] = await self._adopt(keys=keys, args=[other])
            except (RedisError, OSError) as exc:
                log.warning("spend journal not adopted", extra={"gateway": other, "error": repr(exc)[:200]})
                continue
            damaged = []
            for field, value in zip(found[0::2], found[1::2], strict=True):
                record = auth_pb2.SpendRecord()
                try:
                    record.ParseFromString(value)
                except Exception:
                    damaged.append(field.decode() if isinstance(field, bytes) else str(field))
                    continue
                records.append(record)
            if damaged:
                log.warning("damaged spend journal entries dropped", extra={"gateway": other, "rows": len(damaged)})
                await self.forget(damaged)
            if found:
                log.warning(
                    "spend of a gateway that is gone taken over", extra={"gateway": other, "rows": len(found) // 2}
                )
        return records

    async def close(self) -> None:
        """A clean stop: with nothing left to send, this gateway's journal is no longer watched."""
        try:
            if not await self.redis.hlen(self._key):
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.srem(self._members, self.gateway_id)
                    pipe.delete(self._alive(self.gateway_id))
                    await pipe.execute()
        except (RedisError, OSError):
            pass  # its heartbeat lapses; another gateway finds the journal empty
