"""aiohttp application speaking vLLM's OpenAI-compatible API, answer for answer in the shapes real vLLM
0.32 gives (recorded in `tests/data/vllm/`): chat and completions (streamed or not, `n`, several prompts,
`logprobs`, `stop`, `response_format`, tools), embeddings for embedding models, `/v1/models`, `/metrics`."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import struct
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import generate_latest

from iir_simbackend.answers import ChatAnswer, CompletionAnswer, Plan, plan_chat, plan_completion
from iir_simbackend.engine.engine import Engine
from iir_simbackend.engine.serving import (
    SESSION_ID_HEADER,
    EngineCall,
    build_engine,
    document,
    prompt_ids,
    stream,
    with_engine_usage,
)
from iir_simbackend.engine.tokens import Tokenizer, load_tokenizer
from iir_simbackend.generation import count_tokens
from iir_simbackend.lora import LoraState
from iir_simbackend.settings import SimSettings
from iir_simbackend.vllm_errors import check_sampling, error, json_object, missing, not_found
from iir_simbackend.vllm_metrics import VllmMetrics

SETTINGS = web.AppKey("settings", SimSettings)
METRICS = web.AppKey("metrics", VllmMetrics)
SEEN = web.AppKey("seen", set[str])  # model names asked for, served because IIR_SIM_MODELS has "*"
LORA = web.AppKey("lora", LoraState)  # only with IIR_SIM_MAX_LORAS
ENGINE = web.AppKey("engine", Engine)  # only with IIR_SIM_ENGINE
TOKENIZER: web.AppKey[Tokenizer] = web.AppKey("tokenizer")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(data: Any) -> web.Response:
    return web.Response(body=orjson.dumps(data), content_type="application/json")


def _served(request: web.Request, model: Any, embedding: bool) -> web.Response | None:
    """None when this server serves `model` for the route's task; vLLM's 404s otherwise."""
    settings = request.app[SETTINGS]
    names = settings.model_names + settings.embedding_model_names
    lora = request.app.get(LORA)
    if lora is not None and not embedding and model in lora.adapters:
        return None
    if not isinstance(model, str) or (model not in names and not settings.any_model):
        valid = ", ".join(names)
        return error(404, f"The model `{model}` does not exist. Valid aliases: {valid}.", "NotFoundError", "model")
    if (model in settings.embedding_model_names) != embedding:
        return not_found()  # vLLM serves one task per model: the other task's routes do not exist
    if model not in names:
        request.app[SEEN].add(model)
    return None


async def _read(request: web.Request, embedding: bool = False) -> dict[str, Any] | web.Response:
    body = await json_object(request)
    if isinstance(body, web.Response):
        return body
    return _served(request, body.get("model"), embedding) or body


async def models(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    now = int(time.time())
    seen: set[str] = request.app[SEEN]
    names = [*settings.model_names, *settings.embedding_model_names, *sorted(seen)]
    permission = {
        "object": "model_permission",
        "created": now,
        "allow_create_engine": False,
        "allow_sampling": True,
        "allow_logprobs": True,
        "allow_search_indices": False,
        "allow_view": True,
        "allow_fine_tuning": False,
        "organization": "*",
        "group": None,
        "is_blocking": False,
    }
    data = [
        {
            "id": m,
            "object": "model",
            "created": now,
            "owned_by": "vllm",
            "root": m,
            "parent": None,
            "max_model_len": settings.max_model_len,
            "permission": [{"id": f"modelperm-{uuid.uuid4().hex[:16]}", **permission}],
        }
        for m in names
    ]
    lora = request.app.get(LORA)
    if lora is not None:  # adapters under their base model, as vLLM lists them
        data += [
            {
                "id": name,
                "object": "model",
                "created": now,
                "owned_by": "vllm",
                "root": path,
                "parent": lora.base,
                "max_model_len": None,
                "permission": [{"id": f"modelperm-{uuid.uuid4().hex[:16]}", **permission}],
            }
            for name, path in lora.adapters.items()
        ]
    return _json({"object": "list", "data": data})


async def health(request: web.Request) -> web.Response:
    return web.Response(status=200)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(request.app[METRICS].registry), content_type="text/plain", charset="utf-8")


def _request_id(request: web.Request) -> str:
    """vLLM names its answer after the caller's X-Request-Id, else a random id."""
    return request.headers.get("x-request-id") or uuid.uuid4().hex[:16]


def _handler(chat: bool) -> Handler:
    """The handler for `/v1/chat/completions` (chat) or `/v1/completions`."""

    async def handler(request: web.Request) -> web.StreamResponse:
        body = await _read(request)
        if isinstance(body, web.Response):
            return body
        settings = request.app[SETTINGS]
        if chat and not isinstance(body.get("messages"), list):
            return missing("messages", body)
        if not chat and body.get("prompt") is None:
            return missing("prompt", body)
        plan: Plan = (plan_chat if chat else plan_completion)(body, settings.default_max_tokens)
        engine = request.app.get(ENGINE)
        prompts: list[list[int]] = []
        if engine is not None:
            prompts = prompt_ids(request.app[TOKENIZER], body, chat)
            plan = with_engine_usage(plan, prompts)
        refused = check_sampling(body, settings.max_model_len, plan.prompt_tokens)
        if refused is not None:
            return refused
        prefix = "chatcmpl" if chat else "cmpl"
        answer = (ChatAnswer if chat else CompletionAnswer)(plan, f"{prefix}-{_request_id(request)}", body["model"])
        if engine is not None:
            return await _engine_answer(request, engine, prompts, answer, body)
        m = request.app[METRICS]
        lora = request.app.get(LORA)
        start = time.perf_counter()
        m.running.inc()
        if lora is not None:
            lora.started(body["model"])
        m.prompt_tokens.inc(plan.prompt_tokens)
        try:
            if body.get("stream"):
                return await _stream(request, answer, start)
            longest = max(len(o.generated.tokens) for o in plan.outputs)
            delay = settings.ttft_ms / 1000 + (longest / settings.tokens_per_s if settings.tokens_per_s else 0)
            if delay:
                await asyncio.sleep(delay)
            m.ttft.observe(time.perf_counter() - start)
            m.generation_tokens.inc(plan.completion_tokens)
            m.success.inc()
            return _json(answer.document())
        finally:
            m.running.dec()
            if lora is not None:
                lora.finished(body["model"])
            m.e2e.observe(time.perf_counter() - start)

    return handler


async def _engine_answer(
    request: web.Request,
    engine: Engine,
    prompts: list[list[int]],
    answer: ChatAnswer | CompletionAnswer,
    body: dict[str, Any],
) -> web.StreamResponse:
    """The answer timed by the engine model (which keeps vLLM's metrics itself)."""
    settings = request.app[SETTINGS]
    model = body["model"]
    lora = request.app.get(LORA)
    adapter = engine.lora(model, lora.adapters[model]) if lora is not None and model in lora.adapters else None
    session = body.get("session_id")
    session = session if isinstance(session, str) else request.headers.get(SESSION_ID_HEADER)
    call = EngineCall(engine, request.app[TOKENIZER], answer.plan, prompts, str(answer.head["id"]), adapter, session)
    if lora is not None:
        lora.started(model)
    details = settings.enable_prompt_tokens_details
    try:
        if body.get("stream"):
            return await stream(request, call, answer, details, settings.stream_interval)
        return await document(call, answer, details)
    finally:
        call.abort()  # the client left: vLLM stops generating
        if lora is not None:
            lora.finished(model)


async def reset_prefix_cache(request: web.Request) -> web.Response:
    """vLLM's POST /reset_prefix_cache: `{"success": false}` while blocks are held, unless
    `reset_running_requests` preempts the running requests first."""
    flag = request.query.get("reset_running_requests", "false").lower() in ("true", "1", "yes", "on")
    return _json({"success": await request.app[ENGINE].reset_prefix_cache(flag)})


def _render(chat: bool) -> Handler:
    """vLLM's render API (`/v1/chat/completions/render`, `/v1/completions/render`): the request's token ids,
    as routers that hash blocks from them (vllm-router's kv_aware) ask each worker for them."""

    async def handler(request: web.Request) -> web.StreamResponse:
        body = await _read(request)
        if isinstance(body, web.Response):
            return body
        if chat and not isinstance(body.get("messages"), list):
            return missing("messages", body)
        if not chat and body.get("prompt") is None:
            return missing("prompt", body)
        ids = prompt_ids(request.app[TOKENIZER], body, chat)
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        rendered = {
            "request_id": _request_id(request),
            "token_ids": ids[0],
            "sampling_params": {"max_tokens": max_tokens},
            "model": body["model"],
        }
        return _json(rendered if chat else [{**rendered, "token_ids": p} for p in ids])

    return handler


async def _start_engine(app: web.Application) -> None:
    app[ENGINE].start()


async def _stop_engine(app: web.Application) -> None:
    await app[ENGINE].stop()


async def _stream(request: web.Request, answer: ChatAnswer | CompletionAnswer, start: float) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    m = request.app[METRICS]
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    if settings.ttft_ms:
        await asyncio.sleep(settings.ttft_ms / 1000)
    gap = 1 / settings.tokens_per_s if settings.tokens_per_s else 0
    first = True
    for chunk, is_token in answer.chunks():
        if is_token:
            if first:
                m.ttft.observe(time.perf_counter() - start)
                first = False
            elif gap:
                await asyncio.sleep(gap)
        await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
    m.generation_tokens.inc(answer.plan.completion_tokens)
    m.success.inc()
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


def _vector(text: str, dims: int) -> list[float]:
    raw: list[float] = []
    counter = 0
    while len(raw) < dims:  # as many bytes as asked for, 64 at a time
        raw.extend(b - 127.5 for b in hashlib.blake2b(f"{counter}:{text}".encode(), digest_size=64).digest())
        counter += 1
    raw = raw[:dims]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [v / norm for v in raw]


async def embeddings(request: web.Request) -> web.Response:
    """vLLM's /v1/embeddings answer for an embedding model: one deterministic unit vector per input."""
    body = await _read(request, embedding=True)
    if isinstance(body, web.Response):
        return body
    settings = request.app[SETTINGS]
    inputs = body.get("input")
    if inputs is None:
        return missing("input", body)
    if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], int)):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs:
        return error(400, "Input should be a valid string or a non-empty list", "BadRequestError", "input")
    dims = body.get("dimensions")
    if dims is not None and (not isinstance(dims, int) or not 1 <= dims <= settings.embedding_dims):
        return error(
            400,
            f"dimensions must be between 1 and {settings.embedding_dims}, got {dims}.",
            "BadRequestError",
            "dimensions",
        )
    as_base64 = body.get("encoding_format") == "base64"
    data, used = [], 0
    for i, item in enumerate(inputs):
        text = item if isinstance(item, str) else orjson.dumps(item).decode()
        used += count_tokens(text)
        vector = _vector(text, dims or settings.embedding_dims)
        embedding: Any = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode() if as_base64 else vector
        data.append({"index": i, "object": "embedding", "embedding": embedding})
    return _json(
        {
            "id": f"embd-{_request_id(request)}",
            "object": "list",
            "created": int(time.time()),
            "model": body["model"],
            "data": data,
            "usage": {
                "prompt_tokens": used,
                "total_tokens": used,
                "completion_tokens": 0,
                "prompt_tokens_details": None,
            },
        }
    )


async def tokenize(request: web.Request) -> web.StreamResponse:
    """vLLM's POST /tokenize: a chat request's (`messages`) or a prompt's token count, the same count its
    answer's `usage.prompt_tokens` gives."""
    body = await _read(request)
    if isinstance(body, web.Response):
        return body
    chat = isinstance(body.get("messages"), list)
    if not chat and not isinstance(body.get("prompt"), str):
        return missing("prompt", body)
    settings = request.app[SETTINGS]
    if ENGINE in request.app:
        ids = prompt_ids(request.app[TOKENIZER], body, chat)[0]
    else:
        plan = (plan_chat if chat else plan_completion)({**body, "n": 1}, settings.default_max_tokens)
        ids = list(range(plan.prompt_tokens))
    return _json({"count": len(ids), "max_model_len": settings.max_model_len, "tokens": ids, "token_strs": None})


async def _not_found(request: web.Request) -> web.Response:
    return not_found()


def create_app(settings: SimSettings | None = None) -> web.Application:
    settings = settings or SimSettings()
    app = web.Application()
    app[SETTINGS] = settings
    app[SEEN] = set()
    app[METRICS] = VllmMetrics(settings.model_names[0] if settings.model_names else "")
    app.router.add_post("/v1/chat/completions", _handler(chat=True))
    app.router.add_post("/v1/completions", _handler(chat=False))
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/tokenize", tokenize)
    if settings.engine:
        app[ENGINE] = build_engine(settings, app[METRICS])
        app[TOKENIZER] = load_tokenizer(settings.tokenizer)
        app.router.add_post("/reset_prefix_cache", reset_prefix_cache)
        app.router.add_post("/v1/chat/completions/render", _render(chat=True))
        app.router.add_post("/v1/completions/render", _render(chat=False))
        app.on_startup.append(_start_engine)
        app.on_cleanup.append(_stop_engine)
    if settings.max_loras > 0:
        lora = app[LORA] = LoraState(app[METRICS].model, settings.max_loras, app[METRICS].registry)
        app.router.add_post("/v1/load_lora_adapter", lora.load)
        app.router.add_post("/v1/unload_lora_adapter", lora.unload)
    app.router.add_route("*", "/{tail:.*}", _not_found)
    return app
