"""Uploaded files (`/v1/files`): a batch's input, and the output and error files IIR writes for it.
In Redis with a TTL (the storage Redis: `IIR_STORAGE_REDIS_URL`), each belonging to the key that uploaded
it (an admin key sees any), counted in the storage quotas of its key, team and the global budget.
An upload is written as it arrives (`begin` → `write`… → `commit`), never held whole in memory."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
import redis.asyncio as aioredis

from iir_gateway.accounting.storage_quota import StorageQuota, scopes_of
from iir_gateway.principal import Principal

UPLOAD_TTL_S = 3600  # an upload's partial content and its reservation, until it is committed
WRITE_CHUNK = 1 << 20  # bytes sent to Redis at once


class FileStore:
    def __init__(self, redis: aioredis.Redis, prefix: str, ttl_s: int, quota: StorageQuota | None = None) -> None:
        self.redis, self.prefix, self.ttl_s, self.quota = redis, prefix, ttl_s, quota

    def _key(self, file_id: str) -> str:
        return f"{self.prefix}files:{file_id}"

    def _content_key(self, file_id: str) -> str:
        return f"{self.prefix}files:{file_id}:content"

    def _owned(self, owner: str) -> str:
        return f"{self.prefix}files:owner:{owner}"

    def _meta(self, file_id: str, filename: str, purpose: str, size: int) -> dict[str, Any]:
        now = int(time.time())
        return {
            "id": file_id,
            "object": "file",
            "bytes": size,
            "created_at": now,
            "expires_at": now + self.ttl_s,
            "filename": filename,
            "purpose": purpose,
            "status": "processed",  # `status_details` (deprecated) left out: OpenAI's schema has no null there
        }

    async def _publish(self, owner: str, scopes: list[str], meta: dict[str, Any], content: bytes | None) -> None:
        file_id = meta["id"]
        async with self.redis.pipeline(transaction=True) as pipe:
            if content is not None:
                pipe.set(self._content_key(file_id), content)
            pipe.expire(self._content_key(file_id), self.ttl_s)
            pipe.hset(
                self._key(file_id),
                mapping={"owner": owner, "meta": orjson.dumps(meta), "scopes": ",".join(scopes)},
            )
            pipe.expire(self._key(file_id), self.ttl_s)
            pipe.zadd(self._owned(owner), {file_id: time.time()})  # finer than created_at: pages keep their order
            pipe.expire(self._owned(owner), self.ttl_s)
            await pipe.execute()

    def output(self, principal: Principal) -> FileUpload:
        """A file IIR writes itself for `principal` (a batch's output or errors), written in pieces like an
        upload: counted in the quotas of its key, team and the global budget when committed, never
        refused (its tokens were paid for; a batch cannot start while the key's file quota is full)."""
        return FileUpload(self, principal.key_id, scopes_of(principal), f"file-{uuid.uuid4().hex}", enforce=False)

    async def begin(self, principal: Principal, declared_bytes: int) -> FileUpload:
        """Starts an upload of at most `declared_bytes`, reserved in the quotas now (a 429 when they
        are full, before a byte is read)."""
        upload = FileUpload(self, principal.key_id, scopes_of(principal), f"file-{uuid.uuid4().hex}")
        if self.quota is not None:
            await self.quota.reserve("files", upload.scopes, upload.id, declared_bytes, UPLOAD_TTL_S)
        return upload

    async def _owner_of(self, file_id: str) -> str | None:
        owner: Any = await self.redis.hget(self._key(file_id), "owner")
        return owner.decode() if owner is not None else None

    async def get(self, file_id: str, principal: Principal) -> dict[str, Any] | None:
        got: Any = await self.redis.hmget(self._key(file_id), ["owner", "meta"])
        owner, meta = got
        if meta is None or (owner.decode() != principal.key_id and not principal.admin):
            return None
        data: dict[str, Any] = orjson.loads(meta)
        if data.get("status_details", "") is None:  # stored by an earlier version
            del data["status_details"]
        return data

    async def content(self, file_id: str, principal: Principal) -> bytes | None:
        if await self.get(file_id, principal) is None:
            return None
        raw: Any = await self.redis.get(self._content_key(file_id))
        if raw is None:  # stored by an earlier version, in the file's hash
            raw = await self.redis.hget(self._key(file_id), "content")
        return bytes(raw) if raw is not None else None

    async def delete(self, file_id: str, principal: Principal) -> bool:
        got: Any = await self.redis.hmget(self._key(file_id), ["owner", "scopes"])
        owner, scopes = (v.decode() if v is not None else None for v in got)
        if owner is None or (owner != principal.key_id and not principal.admin):
            return False
        await self.redis.delete(self._key(file_id), self._content_key(file_id))
        await self.redis.zrem(self._owned(owner), file_id)
        if self.quota is not None and scopes:
            await self.quota.release("files", scopes.split(","), file_id)
        return True

    async def list(
        self,
        principal: Principal,
        purpose: str | None = None,
        after: str | None = None,
        limit: int = 10000,
        order: str = "desc",
    ) -> tuple[list[dict[str, Any]], bool]:
        """A page of the key's files, newest first (`order="asc"`: oldest first), those after the file
        `after`; and whether more follow."""
        owned = self._owned(principal.key_id)
        ids: Any = await (self.redis.zrange(owned, 0, 9999) if order == "asc" else self.redis.zrevrange(owned, 0, 9999))
        names = [i.decode() for i in ids]
        if after is not None:
            names = names[names.index(after) + 1 :] if after in names else []
        out: list[dict[str, Any]] = []
        for file_id in names:
            meta = await self.get(file_id, principal)
            if meta is None or (purpose is not None and meta["purpose"] != purpose):
                continue
            if len(out) == limit:
                return out, True
            out.append(meta)
        return out, False


class FileUpload:
    """An upload being written: its content goes to Redis in pieces as it arrives."""

    def __init__(self, store: FileStore, owner: str, scopes: list[str], file_id: str, enforce: bool = True) -> None:
        self.store, self.owner, self.scopes, self.id = store, owner, scopes, file_id
        self.enforce = enforce  # False: counted in the quotas, never refused
        self.size = 0
        self._pending: list[bytes] = []
        self._pending_bytes = 0

    async def write(self, data: bytes) -> None:
        self._pending.append(data)
        self._pending_bytes += len(data)
        self.size += len(data)
        if self._pending_bytes >= WRITE_CHUNK:
            await self._flush()

    async def _flush(self) -> None:
        if not self._pending:
            return
        piece = b"".join(self._pending)
        self._pending, self._pending_bytes = [], 0
        key = self.store._content_key(self.id)
        async with self.store.redis.pipeline(transaction=False) as pipe:
            pipe.append(key, piece)
            pipe.expire(key, UPLOAD_TTL_S)
            await pipe.execute()

    async def commit(self, filename: str, purpose: str) -> dict[str, Any]:
        """The file, complete: counted at its real size and kept for the store's TTL."""
        await self._flush()
        meta = self.store._meta(self.id, filename, purpose, self.size)
        if self.store.quota is not None:
            await self.store.quota.reserve(
                "files", self.scopes, self.id, self.size, self.store.ttl_s, enforce=self.enforce
            )
        await self.store._publish(self.owner, self.scopes, meta, b"" if self.size == 0 else None)
        return meta

    async def abort(self) -> None:
        """Drops what was written and frees the reservation."""
        self._pending = []
        await self.store.redis.delete(self.store._content_key(self.id))
        if self.store.quota is not None:
            await self.store.quota.release("files", self.scopes, self.id)
