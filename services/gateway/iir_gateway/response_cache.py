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
import time
from collections.abc import AsyncIterator
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


class StreamAssembler:
    """Adds the chat chunks of an OpenAI stream up into the completion they make."""

    def __init__(self) -> None:
        self.tail = b""
        self.first: dict[str, Any] | None = None
        self.parts: list[str] = []
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None
        self.broken = False

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Takes the next bytes of the stream; returns the chunks completed by them (an event cut across
        two reads is returned with the second)."""
        events = (self.tail + data).split(b"\n\n")
        self.tail = events.pop()
        chunks = []
        for event in events:
            if not event.startswith(b"data: {"):
                continue
            chunk = orjson.loads(event[6:])
            chunks.append(chunk)
            if "error" in chunk:
                self.broken = True
                continue
            self.first = self.first or chunk
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                if delta.get("tool_calls"):
                    self.broken = True  # tool-call streams are not cached
                self.parts.append(delta.get("content") or choice.get("text") or "")
                self.finish = choice.get("finish_reason") or self.finish
            if chunk.get("usage"):
                self.usage = chunk["usage"]
        return chunks

    def completion(self) -> dict[str, Any] | None:
        if self.broken or self.first is None or self.finish is None:
            return None
        text = "".join(self.parts)
        chat = self.first.get("object") == "chat.completion.chunk"
        choice = {"index": 0, "message": {"role": "assistant", "content": text}} if chat else {"index": 0, "text": text}
        return {
            "id": self.first.get("id", ""),
            "object": "chat.completion" if chat else "text_completion",
            "created": self.first.get("created", 0),
            "model": self.first.get("model", ""),
            "choices": [{**choice, "logprobs": None, "finish_reason": self.finish}],
            "usage": self.usage,
        }


async def replay(completion: dict[str, Any], include_usage: bool, chat: bool) -> AsyncIterator[bytes]:
    """A cached completion as the SSE stream an upstream would have sent."""
    base = {
        "id": completion.get("id", ""),
        "created": int(time.time()),
        "model": completion.get("model", ""),
        "object": "chat.completion.chunk" if chat else "text_completion",
    }
    choice = (completion.get("choices") or [{}])[0]
    text = (choice.get("message") or {}).get("content") or "" if chat else choice.get("text") or ""
    words = text.split(" ")
    if chat:
        yield _event(
            {
                **base,
                "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
                ],
            }
        )
    for i, word in enumerate(words):
        piece = word if i == 0 else " " + word
        delta = {"delta": {"content": piece}} if chat else {"text": piece}
        yield _event({**base, "choices": [{"index": 0, **delta, "logprobs": None, "finish_reason": None}]})
    end = {"delta": {}} if chat else {"text": ""}
    yield _event(
        {
            **base,
            "choices": [{"index": 0, **end, "logprobs": None, "finish_reason": choice.get("finish_reason") or "stop"}],
        }
    )
    if include_usage and completion.get("usage"):
        yield _event({**base, "choices": [], "usage": completion["usage"]})
    yield b"data: [DONE]\n\n"


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"
