"""Stored Responses (`store: true`, as OpenAI keeps them): the Response object, its input items, and the
conversation up to it as chat messages, so `previous_response_id` continues it on any gateway replica.
In the storage Redis (`IIR_STORAGE_REDIS_URL`), one key per response with a TTL, counted in the storage
quotas; each belongs to the API key that made it (another key gets 404; an admin key sees any)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from iir_gateway.accounting.storage_quota import StorageQuota, scopes_of
from iir_gateway.errors import APIError
from iir_gateway.principal import Principal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredResponse:
    owner: str
    response: dict[str, Any]
    input_items: list[dict[str, Any]]
    history: list[dict[str, Any]]  # chat messages of the conversation, this response's output included


class ResponseStore:
    def __init__(self, redis: aioredis.Redis, prefix: str, ttl_s: int, quota: StorageQuota | None = None) -> None:
        self.redis, self.prefix, self.ttl_s, self.quota = redis, prefix, ttl_s, quota

    async def check_quota(self, principal: Principal) -> None:
        """A 429 now when the key (or its team, or the gateway) can store no more responses. When Redis
        fails, the answer is made and sent unstored (`put` fails the same way), as without `store`."""
        if self.quota is not None:
            try:
                await self.quota.check("responses", scopes_of(principal))
            except RedisError as exc:
                log.warning("storage quota not checked: Redis failed", extra={"error": repr(exc)[:200]})

    def _key(self, response_id: str) -> str:
        return f"{self.prefix}responses:{response_id}"

    async def put(self, principal: Principal, stored: StoredResponse) -> None:
        scopes = scopes_of(principal)
        data: dict[str, Any] = {
            "owner": principal.key_id,
            "response": stored.response,
            "input_items": stored.input_items,
            "history": stored.history,
            "scopes": scopes,  # the quota scopes it counts in, freed when deleted
        }
        raw = orjson.dumps(data)
        if self.quota is not None:
            try:
                await self.quota.reserve("responses", scopes, stored.response["id"], len(raw), self.ttl_s)
            except APIError as exc:  # filled while it ran: answered (and billed), not stored
                log.warning(
                    "response not stored: quota", extra={"response_id": stored.response["id"], "error": str(exc)}
                )
                return
        await self.redis.set(self._key(stored.response["id"]), raw, ex=self.ttl_s)

    async def get(self, response_id: str, principal: Principal) -> StoredResponse | None:
        raw = await self.redis.get(self._key(response_id))
        if raw is None:
            return None
        data = orjson.loads(raw)
        if data["owner"] != principal.key_id and not principal.admin:
            return None
        return StoredResponse(data["owner"], data["response"], data["input_items"], data["history"])

    async def delete(self, response_id: str, principal: Principal) -> bool:
        raw = await self.redis.get(self._key(response_id))
        if raw is None:
            return False
        data = orjson.loads(raw)
        if data["owner"] != principal.key_id and not principal.admin:
            return False
        deleted = bool(await self.redis.delete(self._key(response_id)))
        if self.quota is not None and data.get("scopes"):
            await self.quota.release("responses", data["scopes"], response_id)
        return deleted
