"""Step 8: the response cache. A hit answers here (as a stream when one was asked for) and is accounted
as if it had been generated; a miss is stored once its answer is complete (a stream as the completion
it adds up to), after scrubbing, so no secret is kept."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

from iir_gateway.answer import Answer, Event, ListStream
from iir_gateway.caching.assembler import StreamAssembler
from iir_gateway.caching.replay import replay
from iir_gateway.caching.response_cache import wants_cache
from iir_gateway.metrics import GatewayMetrics
from iir_gateway.pipeline.context import RequestContext
from iir_gateway.pipeline.step import Step

Spawn = Callable[[Coroutine[Any, Any, None]], None]


class AnswerCache(Protocol):
    def key(self, path: str, body: dict[str, Any], key_id: str) -> str: ...

    async def get(self, key: str) -> dict[str, Any] | None:
        """The entry `{"model", "completion"}`; None on a miss or a failure."""
        ...

    async def put(self, key: str, entry: dict[str, Any]) -> None: ...


class Cache(Step):
    name = "cache"

    def __init__(self, cache: AnswerCache | None, metrics: GatewayMetrics, spawn: Spawn) -> None:
        self.cache = cache
        self.metrics = metrics
        self.spawn = spawn

    async def before(self, ctx: RequestContext) -> Answer | None:
        principal = ctx.principal
        assert principal is not None
        cache = self.cache
        if cache is None or not wants_cache(ctx.body, ctx.headers.get("x-iir-cache", ""), principal.cache_mode):
            return None
        key = cache.key(ctx.operation, ctx.body, principal.key_id)
        entry = await cache.get(key)
        self.metrics.cache.labels("hit" if entry else "miss").inc()
        if entry is None:
            ctx.cache_key = key
            ctx.response_headers["x-iir-cache"] = "miss"
            return None
        ctx.cache_hit = True
        ctx.response_headers["x-iir-cache"] = "hit"
        completion = entry["completion"]
        if not ctx.stream:
            return Answer(entry["model"], document=Event.of(completion))
        events = replay(completion, ctx.client_usage, ctx.operation == "chat/completions")
        return Answer(entry["model"], stream=ListStream(events, completion.get("usage")))

    def _store(self, ctx: RequestContext, completion: dict[str, Any]) -> None:
        assert self.cache is not None and ctx.cache_key is not None
        self.spawn(self.cache.put(ctx.cache_key, {"model": ctx.answered_by, "completion": completion}))

    def on_document(self, ctx: RequestContext, document: Event) -> Event:
        if ctx.cache_key is not None:
            self._store(ctx, document.json())
        return document

    def wants_chunks(self, ctx: RequestContext) -> bool:
        return ctx.cache_key is not None  # a miss to store

    def on_chunk(self, ctx: RequestContext, event: Event) -> Sequence[Event]:
        assembler = ctx.state.get(self.name)
        if assembler is None:
            assembler = ctx.state[self.name] = StreamAssembler()
        assembler.add(event.json())
        return (event,)

    def on_complete(self, ctx: RequestContext) -> None:
        assembler = ctx.state.get(self.name)
        if assembler is None or not ctx.ok:
            return
        completion = assembler.completion()
        if completion is not None:
            completion["usage"] = completion["usage"] or ctx.usage  # the client may not have been sent it
            self._store(ctx, completion)
