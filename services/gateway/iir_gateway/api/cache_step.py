"""The response cache around dispatch: answer a hit (as a stream when one was asked for), store a miss."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from starlette.responses import Response, StreamingResponse

from iir_gateway.gateway import Gateway
from iir_gateway.response_cache import StreamAssembler, replay
from iir_gateway.upstream import SSE_HEADERS, OnDone


async def cached_answer(
    gw: Gateway, key: str, stream: bool, include_usage: bool, chat: bool, on_done: OnDone
) -> Response | None:
    """The cached answer for `key`, accounted as if it had been generated; None on a miss."""
    assert gw.cache is not None
    entry = await gw.cache.get(key)
    gw.metrics.cache.labels("hit" if entry else "miss").inc()
    if entry is None:
        return None
    completion = entry["completion"]
    on_done(completion.get("usage"), True)
    headers = {"x-iir-model": entry["model"], "x-iir-cache": "hit"}
    if stream:
        return StreamingResponse(
            replay(completion, include_usage, chat), media_type="text/event-stream", headers={**SSE_HEADERS, **headers}
        )
    return Response(orjson.dumps(completion), media_type="application/json", headers=headers)


def remember_answer(gw: Gateway, key: str, response: Response, usage: Callable[[], dict[str, Any] | None]) -> None:
    """Stores a successful answer once it is complete (a stream: when its last event has passed; `usage`
    gives the stream's usage, which the client may not have been sent)."""
    assert gw.cache is not None
    cache = gw.cache
    response.headers["x-iir-cache"] = "miss"
    model = response.headers.get("x-iir-model", "")
    if response.status_code != 200:
        return
    if not isinstance(response, StreamingResponse):
        gw.spawn(cache.put(key, {"model": model, "completion": orjson.loads(bytes(response.body))}))
        return
    source = response.body_iterator
    assembler = StreamAssembler()

    async def assembled() -> AsyncIterator[Any]:
        async for chunk in source:
            assembler.feed(chunk if isinstance(chunk, bytes) else chunk.encode())
            yield chunk
        completion = assembler.completion()
        if completion is not None:
            completion["usage"] = completion["usage"] or usage()
            gw.spawn(cache.put(key, {"model": model, "completion": completion}))

    response.body_iterator = assembled()
