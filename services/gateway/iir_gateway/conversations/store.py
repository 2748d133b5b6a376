"""Stored Responses (`store: true`, as OpenAI keeps them): the Response object, its input items, and the
conversation up to it as chat messages, so `previous_response_id` continues it on any gateway replica.
In Redis, where IIR keeps its other durable request state (jobs), one key per response with a TTL;
each belongs to the API key that made it (another key gets 404; an admin key sees any)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

from iir_gateway.principal import Principal


@dataclass(frozen=True)
class StoredResponse:
    owner: str
    response: dict[str, Any]
    input_items: list[dict[str, Any]]
    history: list[dict[str, Any]]  # chat messages of the conversation, this response's output included


class ResponseStore:
    def __init__(self, redis: aioredis.Redis, prefix: str, ttl_s: int) -> None:
        self.redis, self.prefix, self.ttl_s = redis, prefix, ttl_s

    def _key(self, response_id: str) -> str:
        return f"{self.prefix}responses:{response_id}"

    async def put(self, principal: Principal, stored: StoredResponse) -> None:
        data = {
            "owner": principal.key_id,
            "response": stored.response,
            "input_items": stored.input_items,
            "history": stored.history,
        }
        await self.redis.set(self._key(stored.response["id"]), orjson.dumps(data), ex=self.ttl_s)

    async def get(self, response_id: str, principal: Principal) -> StoredResponse | None:
        raw = await self.redis.get(self._key(response_id))
        if raw is None:
            return None
        data = orjson.loads(raw)
        if data["owner"] != principal.key_id and not principal.admin:
            return None
        return StoredResponse(data["owner"], data["response"], data["input_items"], data["history"])

    async def delete(self, response_id: str, principal: Principal) -> bool:
        if await self.get(response_id, principal) is None:
            return False
        return bool(await self.redis.delete(self._key(response_id)))
