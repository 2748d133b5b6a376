"""aiohttp application speaking vLLM's OpenAI-compatible API (chat completions, completions, embeddings)."""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
import uuid
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import generate_latest

from iir_simbackend.generation import completion_length, count_tokens, tokens
from iir_simbackend.settings import SimSettings
from iir_simbackend.vllm_metrics import VllmMetrics

SETTINGS = web.AppKey("settings", SimSettings)
METRICS = web.AppKey("metrics", VllmMetrics)


def _error(status: int, message: str, kind: str) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _json(data: Any) -> web.Response:
    return web.Response(body=orjson.dumps(data), content_type="application/json")


def _prompt_text(body: dict[str, Any], chat: bool) -> str:
    if not chat:
        prompt = body.get("prompt", "")
        return prompt if isinstance(prompt, str) else orjson.dumps(prompt).decode()
    parts = []
    for m in body.get("messages") or []:
        content = m.get("content")
        parts.append(content if isinstance(content, str) else orjson.dumps(content).decode())
    return "\n".join(parts)


async def _read_request(request: web.Request) -> dict[str, Any] | web.Response:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _error(400, "Invalid JSON body", "BadRequestError")
    if not isinstance(body, dict):
        return _error(400, "Request body must be a JSON object", "BadRequestError")
    settings = request.app[SETTINGS]
    if body.get("model") not in settings.model_names:
        return _error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError")
    return body


async def models(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    now = int(time.time())
    data = [
        {
            "id": m,
            "object": "model",
            "created": now,
            "owned_by": "vllm",
            "root": m,
            "parent": None,
            "max_model_len": 8192,
        }
        for m in settings.model_names
    ]
    return _json({"object": "list", "data": data})


async def health(request: web.Request) -> web.Response:
    return web.Response(status=200)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(request.app[METRICS].registry), content_type="text/plain", charset="utf-8")


def _completion_handler(chat: bool) -> Any:
    """The handler for `/v1/chat/completions` (chat) or `/v1/completions`."""

    async def handler(request: web.Request) -> web.StreamResponse:
        body = await _read_request(request)
        if isinstance(body, web.Response):
            return body
        settings = request.app[SETTINGS]
        m = request.app[METRICS]
        prompt = _prompt_text(body, chat)
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or settings.default_max_tokens
        if not isinstance(max_tokens, int) or max_tokens < 1:
            return _error(400, "max_tokens must be a positive integer", "BadRequestError")
        n, finish = completion_length(prompt, max_tokens)
        usage = {"prompt_tokens": count_tokens(prompt), "total_tokens": 0, "completion_tokens": n}
        usage["total_tokens"] = usage["prompt_tokens"] + n
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        created = int(time.time())
        start = time.perf_counter()
        m.running.inc()
        m.prompt_tokens.inc(usage["prompt_tokens"])
        try:
            if body.get("stream"):
                return await _stream(request, body, chat, rid, created, prompt, n, finish, usage, start)
            delay = settings.ttft_ms / 1000 + (n / settings.tokens_per_s if settings.tokens_per_s else 0)
            if delay:
                await asyncio.sleep(delay)
            text = "".join(tokens(prompt, n))
            m.ttft.observe(time.perf_counter() - start)
            m.generation_tokens.inc(n)
            if chat:
                choice = {
                    "index": 0,
                    "message": {"role": "assistant", "reasoning_content": None, "content": text, "tool_calls": []},
                    "logprobs": None,
                    "finish_reason": finish,
                    "stop_reason": None,
                }
                obj = "chat.completion"
            else:
                choice = {
                    "index": 0,
                    "text": text,
                    "logprobs": None,
                    "finish_reason": finish,
                    "stop_reason": None,
                    "prompt_logprobs": None,
                }
                obj = "text_completion"
            return _json(
                {
                    "id": rid,
                    "object": obj,
                    "created": created,
                    "model": body["model"],
                    "choices": [choice],
                    "usage": {**usage, "prompt_tokens_details": None},
                    "prompt_logprobs": None,
                    "kv_transfer_params": None,
                }
            )
        finally:
            m.running.dec()
            m.e2e.observe(time.perf_counter() - start)

    return handler


async def _stream(
    request: web.Request,
    body: dict[str, Any],
    chat: bool,
    rid: str,
    created: int,
    prompt: str,
    n: int,
    finish: str,
    usage: dict[str, int],
    start: float,
) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    m = request.app[METRICS]
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    obj = "chat.completion.chunk" if chat else "text_completion"
    head = {"id": rid, "object": obj, "created": created, "model": body["model"]}
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"})
    await resp.prepare(request)

    async def send(choices: list[dict[str, Any]], **extra: Any) -> None:
        await resp.write(b"data: " + orjson.dumps({**head, "choices": choices, **extra}) + b"\n\n")

    def choice(text: str, finish_reason: str | None = None, first: bool = False) -> dict[str, Any]:
        if chat:
            delta = {"role": "assistant", "content": text} if first else {"content": text}
            c: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        else:
            c = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        if finish_reason:
            c["stop_reason"] = None
        return c

    if settings.ttft_ms:
        await asyncio.sleep(settings.ttft_ms / 1000)
    if chat:
        await send([choice("", first=True)])
    gap = 1 / settings.tokens_per_s if settings.tokens_per_s else 0
    for i, tok in enumerate(tokens(prompt, n)):
        if i == 0:
            m.ttft.observe(time.perf_counter() - start)
        elif gap:
            await asyncio.sleep(gap)
        await send([choice(tok)])
    m.generation_tokens.inc(n)
    await send([choice("", finish)])
    if include_usage:
        await send([], usage=usage)
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def embeddings(request: web.Request) -> web.Response:
    """vLLM's /v1/embeddings answer: one deterministic unit vector per input."""
    body = await _read_request(request)
    if isinstance(body, web.Response):
        return body
    inputs = body.get("input")
    if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], int)):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs:
        return _error(400, "input must be a string or a non-empty list", "BadRequestError")
    dims = int(body.get("dimensions") or 8)
    data, used = [], 0
    for i, item in enumerate(inputs):
        text = item if isinstance(item, str) else orjson.dumps(item).decode()
        used += count_tokens(text)
        digest = hashlib.blake2b(text.encode(), digest_size=dims).digest()
        raw = [b - 127.5 for b in digest]
        norm = math.sqrt(sum(v * v for v in raw)) or 1.0
        data.append({"index": i, "object": "embedding", "embedding": [v / norm for v in raw]})
    return _json(
        {
            "id": f"embd-{uuid.uuid4().hex}",
            "object": "list",
            "created": int(time.time()),
            "model": body["model"],
            "data": data,
            "usage": {"prompt_tokens": used, "total_tokens": used, "completion_tokens": 0},
        }
    )


def create_app(settings: SimSettings | None = None) -> web.Application:
    settings = settings or SimSettings()
    app = web.Application()
    app[SETTINGS] = settings
    app[METRICS] = VllmMetrics(settings.model_names[0] if settings.model_names else "")
    handler_chat = _completion_handler(chat=True)
    handler_text = _completion_handler(chat=False)
    app.router.add_post("/v1/chat/completions", handler_chat)
    app.router.add_post("/v1/completions", handler_text)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    return app
