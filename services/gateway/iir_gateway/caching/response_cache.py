"""Exact-match response cache in Redis.

Used for a request when the key or the request (`x-iir-cache: on`) opts in, or by default when the
request is deterministic (`temperature: 0`, or a `seed`); `x-iir-cache: off` or the key's `cache_mode:
off` bypass it. The cache key hashes the model, the endpoint and every body field that changes the
answer (not `stream`, `stream_options` or `user`), plus the API key when entries are kept per key. A
streamed request is answered from a cached completion as a stream, and a streamed answer is stored as
the completion it adds up to.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import orjson
import redis.asyncio as aioredis

log = logging.getLogger(__name__)

_IGNORED = frozenset({"stream", "stream_options", "user"})


def wants_cache(body: dict[str, Any], header: str, key_mode: str) -> bool:
    header = header.lower()
    if header == "off" or key_mode == "off":
        return False
    if header == "on" or key_mode == "on":
        return True
    return body.get("temperature") == 0 or body.get("seed") is not None


def cache_key(prefix: str, path: str, body: dict[str, Any], scope: str) -> str:
    material = {k: v for k, v in body.items() if k not in _IGNORED}
    digest = hashlib.sha256(orjson.dumps([path, scope, material], option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"{prefix}cache:{digest}"


class ResponseCache:
    def __init__(self, redis: aioredis.Redis, prefix: str, ttl_s: int, max_entry_bytes: int, per_key: bool) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.max_entry_bytes = max_entry_bytes
        self.per_key = per_key

    def key(self, path: str, body: dict[str, Any], key_id: str) -> str:
        return cache_key(self.prefix, path, body, key_id if self.per_key else "")

    async def get(self, key: str) -> dict[str, Any] | None:
        try:
            raw = await self.redis.get(key)
        except Exception as exc:  # a cache that fails is a miss, never an error
            log.warning("response cache read failed", extra={"error": repr(exc)})
            return None
        return orjson.loads(raw) if raw else None

    async def put(self, key: str, entry: dict[str, Any]) -> None:
        raw = orjson.dumps(entry)
        if len(raw) > self.max_entry_bytes:
            return
        try:
            await self.redis.set(key, raw, ex=self.ttl_s)
        except Exception as exc:
            log.warning("response cache write failed", extra={"error": repr(exc)})
