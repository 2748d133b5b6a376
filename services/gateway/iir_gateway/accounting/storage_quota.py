"""Quotas on what a key can keep in Redis: files, stored responses, unfinished batches and jobs, each counted
per key, per team (when the key has one) and, in bytes, across all keys (the global storage budget that
keeps Redis's limits and budgets with room to write).

Every scope of every kind is a sorted set of item ids scored by when the item expires, and a hash of the
item's bytes with their total under the field `=`. One Lua call drops expired items, checks each scope
and adds the item to all of them only if all allow it, so gateway replicas sharing Redis count exactly.
Reserving an item already held changes its size and expiry (an upload reserves its Content-Length, then
its real size). Deleting an item releases it from the scopes recorded when it was reserved."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from iir_gateway.errors import APIError
from iir_gateway.principal import Principal

log = logging.getLogger(__name__)

# Every kind (files, responses, batches, jobs) counts its bytes against the global storage budget too (a
# batch's bytes: its lines' results, kept until its output and error files are written; never refused).
DEFAULT_GLOBAL_BYTES = 1 << 30

# Drops up to 1000 expired items of a scope (more go on the next call).
_PURGE = """
local function purge(z, h, now)
  local gone = redis.call('ZRANGEBYSCORE', z, '-inf', now, 'LIMIT', 0, 1000)
  if #gone > 0 then
    local freed = 0
    for _, m in ipairs(gone) do
      freed = freed + tonumber(redis.call('HGET', h, m) or '0')
      redis.call('HDEL', h, m)
    end
    redis.call('ZREM', z, unpack(gone))
    if freed ~= 0 then redis.call('HINCRBY', h, '=', 0 - freed) end
  end
end
"""

# KEYS: per scope (set, hash). ARGV: now ms, member, bytes, expires ms, then per scope (max count, max
# bytes; 0 = unlimited). Answers {1} or {0, scope index, 1 (count) or 2 (bytes), used}.
_RESERVE = (
    _PURGE
    + """
local now, member, bytes, exp = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local n = #KEYS / 2
local deltas = {}
for i = 1, n do
  local z, h = KEYS[2 * i - 1], KEYS[2 * i]
  purge(z, h, now)
  local old = redis.call('HGET', h, member)
  local dc, db = 1, bytes
  if old then dc, db = 0, bytes - tonumber(old) end
  local maxc, maxb = tonumber(ARGV[3 + 2 * i]), tonumber(ARGV[4 + 2 * i])
  local count = redis.call('ZCARD', z)
  if maxc > 0 and dc > 0 and count + dc > maxc then return {0, i, 1, count} end
  local total = tonumber(redis.call('HGET', h, '=') or '0')
  if maxb > 0 and db > 0 and total + db > maxb then return {0, i, 2, total} end
  deltas[i] = db
end
for i = 1, n do
  local z, h = KEYS[2 * i - 1], KEYS[2 * i]
  redis.call('ZADD', z, exp, member)
  redis.call('HSET', h, member, bytes)
  if deltas[i] ~= 0 then redis.call('HINCRBY', h, '=', deltas[i]) end
  local last = tonumber(redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')[2])
  redis.call('PEXPIREAT', z, last + 60000)
  redis.call('PEXPIREAT', h, last + 60000)
end
return {1}
"""
)

_RELEASE = """
local member = ARGV[1]
for i = 1, #KEYS / 2 do
  local z, h = KEYS[2 * i - 1], KEYS[2 * i]
  local old = redis.call('HGET', h, member)
  redis.call('ZREM', z, member)
  if old then
    redis.call('HDEL', h, member)
    if tonumber(old) ~= 0 then redis.call('HINCRBY', h, '=', 0 - tonumber(old)) end
  end
end
return 1
"""

_INFO = (
    _PURGE
    + """
local out = {}
for i = 1, #KEYS / 2 do
  purge(KEYS[2 * i - 1], KEYS[2 * i], tonumber(ARGV[1]))
  out[2 * i - 1] = redis.call('ZCARD', KEYS[2 * i - 1])
  out[2 * i] = tonumber(redis.call('HGET', KEYS[2 * i], '=') or '0')
end
return out
"""
)


@dataclass(frozen=True, slots=True)
class Limits:
    """A kind's limits per key (0: unlimited); a team holds `team_factor` times a key's."""

    count: int
    bytes: int


_NOUNS = {"files": "files", "responses": "stored responses", "batches": "unfinished batches", "jobs": "jobs"}
_ADVICE = {
    "files": "Delete files you no longer need (DELETE /v1/files/{id}).",
    "responses": "Delete stored responses (DELETE /v1/responses/{id}) or send `store: false`.",
    "batches": "Wait for a batch to end, or cancel one.",
    "jobs": "Wait for kept job results to expire.",
}


def scopes_of(principal: Principal) -> list[str]:
    """The scopes an item of `principal` counts in: its key, its team, and the global budget."""
    out = [f"key:{principal.key_id}"]
    if principal.team_id:
        out.append(f"team:{principal.team_id}")
    return [*out, "global"]


class StorageQuota:
    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str,
        limits: dict[str, Limits],
        team_factor: float,
        global_bytes: int,
        sizing: Sequence[aioredis.Redis] = (),
    ) -> None:
        """`global_bytes` 0: half the smallest `maxmemory` of the Redis servers in `sizing` (read once),
        or DEFAULT_GLOBAL_BYTES when none has one."""
        self.redis, self.prefix = redis, prefix
        self.limits, self.team_factor, self.global_bytes = limits, team_factor, global_bytes
        self._sizing = list(sizing) or [redis]
        self._reserve = redis.register_script(_RESERVE)
        self._release = redis.register_script(_RELEASE)
        self._info = redis.register_script(_INFO)

    async def _size_global(self) -> None:
        if self.global_bytes > 0:
            return
        sizes = []
        for server in self._sizing:
            try:
                info: Any = await server.info("memory")
            except ResponseError:  # INFO not allowed to this user: set IIR_STORAGE_MAX_BYTES
                log.warning("cannot read Redis maxmemory; storage budget is the default")
                continue
            if int(info.get("maxmemory") or 0) > 0:
                sizes.append(int(info["maxmemory"]))
        self.global_bytes = min(sizes) // 2 if sizes else DEFAULT_GLOBAL_BYTES
        log.info("global storage budget", extra={"bytes": self.global_bytes})

    def _keys(self, kind: str, scopes: list[str]) -> list[str]:
        keys = []
        for scope in scopes:
            base = f"{self.prefix}quota:{'bytes' if scope == 'global' else kind}:{scope}"
            keys += [base, f"{base}:bytes"]
        return keys

    def _limit(self, kind: str, scope: str) -> tuple[int, int]:
        own = self.limits.get(kind, Limits(0, 0))
        if scope == "global":
            return 0, self.global_bytes
        if scope.startswith("team:"):
            if self.team_factor <= 0:
                return 0, 0
            return int(own.count * self.team_factor), int(own.bytes * self.team_factor)
        return own.count, own.bytes

    async def reserve(
        self, kind: str, scopes: list[str], item: str, size: int, ttl_s: float, enforce: bool = True
    ) -> None:
        """Counts `item` (`size` bytes, kept `ttl_s`) in every scope, or raises a 429 insufficient_quota
        naming the scope that is full. Without `enforce` (what IIR writes itself: batch output) it is
        counted but never refused."""
        await self._size_global()
        now_ms = int(time.time() * 1000)
        args: list[int | str] = [now_ms, item, size, now_ms + int(ttl_s * 1000)]
        for scope in scopes:
            args += list(self._limit(kind, scope)) if enforce else [0, 0]
        reply = await self._reserve(keys=self._keys(kind, scopes), args=args)
        if int(reply[0]):
            return
        index, what, used = (int(v) for v in reply[1:4])
        scope = scopes[index - 1]
        max_count, max_bytes = self._limit(kind, scope)
        raise self._refusal(kind, scope, what, used, max_count, max_bytes)

    def _refusal(self, kind: str, scope: str, what: int, used: int, max_count: int, max_bytes: int) -> APIError:
        noun = _NOUNS[kind]
        if scope == "global":
            log.warning("global storage budget full", extra={"kind": kind, "bytes": used, "limit": max_bytes})
            message = (
                f"The gateway's storage for files, stored responses, jobs and batches is full ({used} of {max_bytes} "
                "bytes, all keys together). Try again later or delete what you keep."
            )
        else:
            whose = "this key" if scope.startswith("key:") else f"team {scope.split(':', 1)[1]}"
            held = f"{used} of {max_count} {noun}" if what == 1 else f"{used} of {max_bytes} bytes of {noun}"
            message = f"The storage quota of {whose} is used up ({held}). {_ADVICE[kind]}"
        return APIError(429, message, type="insufficient_quota", code="insufficient_quota")

    async def check(self, kind: str, scopes: list[str]) -> None:
        """Refuses (429) when a scope is already full: for work that stores its result only at the end,
        so the caller hears before it spends (a concurrent request may still fill it: `reserve` decides)."""
        await self._size_global()
        for scope, (count, used) in zip(scopes, await self.usage(kind, scopes), strict=True):
            max_count, max_bytes = self._limit(kind, scope)
            if max_count > 0 and count >= max_count:
                raise self._refusal(kind, scope, 1, count, max_count, max_bytes)
            if max_bytes > 0 and used >= max_bytes:
                raise self._refusal(kind, scope, 2, used, max_count, max_bytes)

    async def release(self, kind: str, scopes: list[str], item: str) -> None:
        """Frees `item` in the scopes it was reserved in (nothing when it was not)."""
        await self._release(keys=self._keys(kind, scopes), args=[item])

    async def members(self, kind: str, scope: str) -> list[str]:
        """The ids of the items of `kind` held in `scope`."""
        got: Any = await self.redis.zrange(self._keys(kind, [scope])[0], 0, -1)
        return [m.decode() for m in got]

    async def usage(self, kind: str, scopes: list[str]) -> list[tuple[int, int]]:
        """(count, bytes) held in each scope."""
        reply = await self._info(keys=self._keys(kind, scopes), args=[int(time.time() * 1000)])
        return [(int(reply[2 * i]), int(reply[2 * i + 1])) for i in range(len(scopes))]
