"""Async jobs over HTTP: the OpenAI-shaped `/v1/async/chat/completions`, the task API of the first design
(`/generate`, `/status`, `/result`, `/stream`), and `/infer` (direct inference, sync or async)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response, StreamingResponse

from iir_gateway.errors import APIError
from iir_gateway.inference.asgi_answer import SSE_HEADERS
from iir_gateway.jobs.store import FINAL, Job, QueueFull
from iir_gateway.keys.authenticator import extract_key
from iir_gateway.pipeline.context import RequestContext
from iir_gateway.pipeline.pipeline import Pipeline
from iir_gateway.principal import Principal
from iir_gateway.routing.auto_router import is_auto
from iir_gateway.runtime import Runtime
from iir_gateway.schemas import ChatCompletionRequest, validate_body
from iir_gateway.server.bodies import client_ip, read_json_object

router = APIRouter(tags=["Async jobs"])
ASYNC_CHAT = "/v1/async/chat/completions"


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


async def _caller(request: Request, query_key: bool = False) -> tuple[Runtime, Principal]:
    """The runtime and the caller. With `query_key`, a key in `?api_key=` counts too (a browser's
    `EventSource` cannot send headers); the access log never shows the query string."""
    gw: Runtime = request.app.state.gateway
    headers: Any = request.headers
    key = request.query_params.get("api_key") if query_key else None
    if key and extract_key(headers) is None:
        headers = {**headers, "authorization": f"Bearer {key}"}
    return gw, await gw.auth.authenticate(headers, client_ip(request))


async def _owned(gw: Runtime, principal: Principal, job_id: str) -> Job:
    job = await gw.jobs.owned(job_id, principal)
    if job is None:
        raise APIError(404, f"No job `{job_id}`.", code="job_not_found")
    return job


async def _submit(gw: Runtime, principal: Principal, kind: str, body: dict[str, Any]) -> Job:
    if gw.settings.default_model and body.get("model") is None:
        body["model"] = gw.settings.default_model
    validate_body(ChatCompletionRequest, body)
    if not is_auto(body["model"]):  # refused now, not when a worker picks it up (auto chooses later)
        gw.directory.check_access(body["model"], principal)
    size = len(orjson.dumps(body))
    if size > gw.settings.job_max_bytes:
        raise APIError(
            413,
            f"A job's request may hold {gw.settings.job_max_bytes} bytes; this one has {size}.",
            code="request_too_large",
        )
    # Stored scrubbed: the prompt waits in Redis, and a secret must not wait with it.
    body, _ = gw.scrubbing.request(body, gw.scrubbing.mode(principal.scrub_mode))
    # Queuing is a request against the key's RPM (and budget); its tokens are counted when it runs.
    admission = await gw.limiter.admit(principal, 0)
    try:
        return await gw.jobs.submit(principal, kind, "chat/completions", body, gw.settings.job_max_queued_per_key)
    except QueueFull:
        raise APIError(
            429,
            f"This key has {gw.settings.job_max_queued_per_key} unfinished jobs already; wait for some to finish.",
            code="too_many_jobs",
            type="requests",
            headers={**admission.headers, "retry-after": "5"},
        ) from None


@router.post(ASYNC_CHAT, summary="Queue a chat completion", status_code=202)
async def create_async_chat(request: Request) -> Response:
    gw, principal = await _caller(request)
    body = await read_json_object(request, gw.settings.max_body_bytes)
    body.pop("stream", None)
    job = await _submit(gw, principal, "chat", body)
    return _json({"job_id": job.id, "status": job.status}, 202)


@router.get(ASYNC_CHAT + "/{job_id}", summary="A job's status, and its chat completion when done")
async def get_async_chat(job_id: str, request: Request) -> Response:
    gw, principal = await _caller(request)
    return _json((await _owned(gw, principal, job_id)).public())


@router.delete(ASYNC_CHAT + "/{job_id}", summary="Cancel a job")
async def cancel_async_chat(job_id: str, request: Request) -> Response:
    gw, principal = await _caller(request)
    job = await _owned(gw, principal, job_id)
    if job.status in ("completed", "failed"):
        raise APIError(409, f"The job `{job_id}` is already {job.status}.", code="job_not_cancellable")
    if await gw.jobs.finish(job, "cancelled"):
        await gw.jobs.add_event(job_id, "status", {"status": "cancelled"})
    return _json({"job_id": job_id, "status": "cancelled"})


async def _events(gw: Runtime, job_id: str) -> AsyncIterator[tuple[str, bytes]]:
    """The job's events (kind, JSON) from the start, then as they come, until it is final; ("", b"")
    while nothing happens, for a keep-alive."""
    key = gw.jobs.events(job_id)
    last = "0-0"
    while True:
        got: Any = await gw.jobs.redis.xread({key: last}, block=5000, count=100)
        if not got:
            job = await gw.jobs.get(job_id)
            if job is None or job.status in FINAL:
                return
            yield "", b""
            continue
        for entry_id, fields in got[0][1]:
            last = entry_id.decode()
            kind = fields[b"kind"].decode()
            yield kind, fields[b"data"]
            if kind == "status" and orjson.loads(fields[b"data"]).get("status") in FINAL:
                return


async def _named_events(gw: Runtime, job_id: str) -> AsyncIterator[bytes]:
    async for kind, data in _events(gw, job_id):
        yield b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n" if kind else b": keep-alive\n\n"


def _stream(events: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)


@router.get(ASYNC_CHAT + "/{job_id}/events", summary="A job's status and tokens as server-sent events")
async def async_chat_events(job_id: str, request: Request) -> Response:
    gw, principal = await _caller(request)
    await _owned(gw, principal, job_id)
    return _stream(_named_events(gw, job_id))


# The task API of the first design ----------------------------------------------------------------------------


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    user_id: str | None = None
    model: str | None = None


# The task API's names for a job's status (the OpenAI-shaped routes keep IIR's own).
_TASK_STATUS = {"pending": "queued", "running": "processing", "cancelled": "failed"}
_TASK_MESSAGE = {
    "queued": "Your request is being processed. Use the task_id to check status.",
    "processing": "Task is currently being processed",
    "completed": "Task completed",
    "failed": "Task failed",
}


def _task_status(status: str) -> str:
    return _TASK_STATUS.get(status, status)


def _task(job_id: str, status: str, **fields: Any) -> dict[str, Any]:
    task = _task_status(status)
    return {"status": task, "task_id": job_id, "id": job_id, "message": _TASK_MESSAGE.get(task, task), **fields}


@router.post("/generate", summary="Queue a generation (task API)", status_code=202)
async def generate(request: Request) -> Response:
    gw, principal = await _caller(request)
    req = validate_body(GenerateRequest, await read_json_object(request, gw.settings.max_body_bytes))
    body: dict[str, Any] = {
        "model": req.model or gw.settings.default_model or gw.settings.auto_default_model,
        "messages": [{"role": "user", "content": req.prompt}],
    }
    for name in ("max_tokens", "temperature", "top_p"):
        if getattr(req, name) is not None:
            body[name] = getattr(req, name)
    if req.user_id:
        body["user"] = req.user_id
    job = await _submit(gw, principal, "generate", body)
    return _json(_task(job.id, job.status), 202)


@router.get("/status/{job_id}", summary="A task's status: queued, processing, completed or failed")
async def status(job_id: str, request: Request) -> Response:
    gw, principal = await _caller(request)
    job = await _owned(gw, principal, job_id)
    return _json(_task(job.id, job.status, attempts=job.attempts, created_at=int(job.created_at)))


def _text(job: Job) -> str:
    choice = ((job.result or {}).get("choices") or [{}])[0]
    return str((choice.get("message") or {}).get("content") or "")


def _task_result(job: Job) -> tuple[dict[str, Any], int]:
    """`GET /result`'s body and status: the text and metrics, the error, or the status while it runs."""
    if job.status == "completed":
        return _task(job.id, job.status, result=_text(job), text=_text(job), metrics=job.metrics()), 200
    if job.status in FINAL:
        error = job.error or {}
        failure = {
            "error_message": error.get("message") or f"The task was {job.status}.",
            "error_type": error.get("code") or error.get("type") or job.status,
            "error": job.error,
        }
        return {**_task(job.id, job.status, **failure), "status": "error"}, 200
    return _task(job.id, job.status), 202


@router.get("/result/{job_id}", summary="A task's text and metrics")
async def result(job_id: str, request: Request) -> Response:
    gw, principal = await _caller(request)
    body, code = _task_result(await _owned(gw, principal, job_id))
    return _json(body, code)


async def _task_events(gw: Runtime, job: Job) -> AsyncIterator[bytes]:
    """The task's progress as unnamed events (what a browser's `EventSource.onmessage` receives):
    `{"status", "task_id", "message"}`, each token as `token`, and at the end the result or the error."""

    def event(data: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps(data) + b"\n\n"

    yield event(_task(job.id, job.status))
    async for kind, raw in _events(gw, job.id):
        if not kind:
            yield b": keep-alive\n\n"
        elif kind == "token":
            choices = orjson.loads(raw).get("choices") or [{}]
            token = (choices[0].get("delta") or {}).get("content")
            if token:
                yield event(_task(job.id, "running", token=token))
        elif kind == "restart":
            yield event(_task(job.id, "running", restart=True))
        elif kind == "status":
            status = orjson.loads(raw).get("status", "")
            if status in FINAL:
                final = await gw.jobs.get(job.id)
                if final is not None:
                    body, _ = _task_result(final)
                    yield event({**body, "status": _task_status(final.status)})
            else:
                yield event(_task(job.id, status))


@router.get("/stream/{job_id}", summary="A task's progress as server-sent events (`?api_key=` for EventSource)")
async def stream(job_id: str, request: Request) -> Response:
    gw, principal = await _caller(request, query_key=True)
    job = await _owned(gw, principal, job_id)
    return _stream(_task_events(gw, job))


class InferInput(BaseModel):
    """`/infer`'s `input` as an object: a prompt, or chat messages."""

    model_config = ConfigDict(extra="forbid")
    prompt: str | None = Field(default=None, min_length=1)
    messages: list[dict[str, Any]] | None = Field(default=None, min_length=1)


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    model: str = Field(min_length=1)
    input: str | list[dict[str, Any]] | InferInput
    async_: bool = Field(default=False, alias="async")
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)


@router.post("/infer", summary="Direct inference for one model, sync or async")
async def infer(request: Request) -> Response:
    gw, principal = await _caller(request)
    raw = await read_json_object(request, gw.settings.max_body_bytes)
    req = validate_body(InferRequest, raw)
    if isinstance(req.input, InferInput):
        if req.input.messages is None and req.input.prompt is None:
            raise APIError(400, "`input` needs a `prompt` or `messages`.", code="invalid_value", param="input")
        messages = req.input.messages or [{"role": "user", "content": req.input.prompt}]
    else:
        messages = [{"role": "user", "content": req.input}] if isinstance(req.input, str) else req.input
    body: dict[str, Any] = {"model": req.model, "messages": messages}
    for name in ("max_tokens", "temperature"):
        if getattr(req, name) is not None:
            body[name] = getattr(req, name)
    if req.async_:
        job = await _submit(gw, principal, "infer", body)
        return _json({"job_id": job.id, "status": job.status}, 202)
    pipeline: Pipeline = request.app.state.pipeline
    ctx = RequestContext("chat/completions", ChatCompletionRequest, principal=principal, body=body)
    answer = await pipeline.run(ctx)
    assert answer.document is not None  # the body asks for no stream
    completion = answer.document.json()
    choice = (completion.get("choices") or [{}])[0]
    return _json(
        {
            "model": answer.model,
            "output": (choice.get("message") or {}).get("content"),
            "usage": completion.get("usage"),
        }
    )
