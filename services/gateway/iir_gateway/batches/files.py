"""Uploaded files (`/v1/files`): a batch's input, and the output and error files IIR writes for it.
In Redis with a TTL, each belonging to the key that uploaded it (an admin key sees any)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
import redis.asyncio as aioredis

from iir_gateway.principal import Principal


class FileStore:
    def __init__(self, redis: aioredis.Redis, prefix: str, ttl_s: int) -> None:
        self.redis, self.prefix, self.ttl_s = redis, prefix, ttl_s

    def _key(self, file_id: str) -> str:
        return f"{self.prefix}files:{file_id}"

    def _owned(self, owner: str) -> str:
        return f"{self.prefix}files:owner:{owner}"

    async def create(self, owner: str, filename: str, purpose: str, content: bytes) -> dict[str, Any]:
        now = int(time.time())
        meta: dict[str, Any] = {
            "id": f"file-{uuid.uuid4().hex}",
            "object": "file",
            "bytes": len(content),
            "created_at": now,
            "expires_at": now + self.ttl_s,
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "status_details": None,
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._key(meta["id"]), mapping={"owner": owner, "meta": orjson.dumps(meta), "content": content})
            pipe.expire(self._key(meta["id"]), self.ttl_s)
            pipe.zadd(self._owned(owner), {meta["id"]: now})
            pipe.expire(self._owned(owner), self.ttl_s)
            await pipe.execute()
        return meta

    async def _owner_of(self, file_id: str) -> str | None:
        owner: Any = await self.redis.hget(self._key(file_id), "owner")
        return owner.decode() if owner is not None else None

    async def get(self, file_id: str, principal: Principal) -> dict[str, Any] | None:
        got: Any = await self.redis.hmget(self._key(file_id), ["owner", "meta"])
        owner, meta = got
        if meta is None or (owner.decode() != principal.key_id and not principal.admin):
            return None
        data: dict[str, Any] = orjson.loads(meta)
        return data

    async def content(self, file_id: str, principal: Principal) -> bytes | None:
        if await self.get(file_id, principal) is None:
            return None
        raw: Any = await self.redis.hget(self._key(file_id), "content")
        return bytes(raw) if raw is not None else None

    async def delete(self, file_id: str, principal: Principal) -> bool:
        owner = await self._owner_of(file_id)
        if owner is None or (owner != principal.key_id and not principal.admin):
            return False
        await self.redis.delete(self._key(file_id))
        await self.redis.zrem(self._owned(owner), file_id)
        return True

    async def list(self, principal: Principal, purpose: str | None = None) -> list[dict[str, Any]]:
        ids: Any = await self.redis.zrevrange(self._owned(principal.key_id), 0, 9999)
        out = []
        for file_id in ids:
            meta = await self.get(file_id.decode(), principal)
            if meta is not None and (purpose is None or meta["purpose"] == purpose):
                out.append(meta)
        return out
