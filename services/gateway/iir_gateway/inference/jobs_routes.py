"""Async jobs over HTTP: the OpenAI-shaped `/v1/async/chat/completions`, the task API of the first design
(`/generate`, `/status`, `/result`, `/stream`), and `/infer` (direct inference, sync or async). Every
job is submitted through the submission pipeline (`pipelines.submission_pipeline`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response, StreamingResponse

from iir_gateway.errors import APIError
from iir_gateway.inference.asgi_answer import SSE_HEADERS
from iir_gateway.inference.entry import CLIENT_CLOSED
from iir_gateway.jobs.store import FINAL, Job, JobStore
from iir_gateway.keys.authenticator import extract_key
from iir_gateway.pipeline.context import BodyReader
from iir_gateway.pipeline.entry import run_request
from iir_gateway.pipeline.pipeline import Pipeline
from iir_gateway.pipeline.steps.authenticate import KeyCheck
from iir_gateway.pipeline.steps.enqueue import Enqueue
from iir_gateway.principal import Principal
from iir_gateway.schemas import ChatCompletionRequest, validate_body
from iir_gateway.server.bodies import client_ip, read_json_object

ASYNC_CHAT = "/v1/async/chat/completions"


class JobRouteSettings(Protocol):
    """The settings the job routes read."""

    @property
    def max_body_bytes(self) -> int: ...
    @property
    def default_model(self) -> str: ...
    @property
    def auto_default_model(self) -> str: ...


class JobRouteDeps(Protocol):
    """What the job routes use of the runtime."""

    @property
    def settings(self) -> JobRouteSettings: ...
    @property
    def auth(self) -> KeyCheck: ...
    @property
    def jobs(self) -> JobStore: ...
    @property
    def pipeline(self) -> Pipeline:
        """The inference pipeline (`/infer` without `async`)."""
        ...

    @property
    def submission(self) -> Pipeline:
        """The submission pipeline: every job is queued through it."""
        ...


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


async def _submit(
    submission: Pipeline,
    request: Request,
    kind: str,
    *,
    body: dict[str, Any] | None = None,
    read_body: BodyReader | None = None,
    principal: Principal | None = None,
) -> dict[str, Any]:
    """Queues a job of `kind` (`chat`, `generate`, `infer`): its public document."""
    answer = await run_request(
        submission,
        "chat/completions",
        ChatCompletionRequest,
        body=body,
        read_body=read_body,
        headers=request.headers,
        client_ip=client_ip(request),
        principal=principal,
        state={Enqueue.name: kind},
    )
    assert answer is not None and answer.document is not None  # unwatched, and a document
    return answer.document.json()


async def _owned(jobs: JobStore, principal: Principal, job_id: str) -> Job:
    job = await jobs.owned(job_id, principal)
    if job is None:
        raise APIError(404, f"No job `{job_id}`.", code="job_not_found")
    return job


async def _events(jobs: JobStore, job_id: str) -> AsyncIterator[tuple[str, bytes]]:
    """The job's events (kind, JSON) from the start, then as they come, until it is final; ("", b"")
    while nothing happens, for a keep-alive."""
    key = jobs.events(job_id)
    last = "0-0"
    while True:
        got: Any = await jobs.redis.xread({key: last}, block=5000, count=100)
        if not got:
            job = await jobs.get(job_id)
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


async def _named_events(jobs: JobStore, job_id: str) -> AsyncIterator[bytes]:
    async for kind, data in _events(jobs, job_id):
        yield b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n" if kind else b": keep-alive\n\n"


def _stream(events: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)


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


def _generate_body(req: GenerateRequest, default_model: str) -> dict[str, Any]:
    body: dict[str, Any] = {"model": req.model or default_model, "messages": [{"role": "user", "content": req.prompt}]}
    for name in ("max_tokens", "temperature", "top_p"):
        if getattr(req, name) is not None:
            body[name] = getattr(req, name)
    if req.user_id:
        body["user"] = req.user_id
    return body


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


async def _task_events(jobs: JobStore, job: Job) -> AsyncIterator[bytes]:
    """The task's progress as unnamed events (what a browser's `EventSource.onmessage` receives):
    `{"status", "task_id", "message"}`, each token as `token`, and at the end the result or the error."""

    def event(data: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps(data) + b"\n\n"

    yield event(_task(job.id, job.status))
    async for kind, raw in _events(jobs, job.id):
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
                final = await jobs.get(job.id)
                if final is not None:
                    body, _ = _task_result(final)
                    yield event({**body, "status": _task_status(final.status)})
            else:
                yield event(_task(job.id, status))


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


def _infer_body(req: InferRequest) -> dict[str, Any]:
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
    return body


def _infer_document(model: str, completion: dict[str, Any]) -> dict[str, Any]:
    choice = (completion.get("choices") or [{}])[0]
    return {"model": model, "output": (choice.get("message") or {}).get("content"), "usage": completion.get("usage")}


def router(deps: JobRouteDeps) -> APIRouter:
    """The job routes, over `deps`."""
    routes = APIRouter(tags=["Async jobs"])

    async def caller(request: Request, query_key: bool = False) -> Principal:
        """With `query_key`, a key in `?api_key=` counts too (a browser's `EventSource` cannot send
        headers); the access log never shows the query string."""
        headers: Mapping[str, str] = request.headers
        key = request.query_params.get("api_key") if query_key else None
        if key and extract_key(headers) is None:
            headers = {**headers, "authorization": f"Bearer {key}"}
        return await deps.auth.authenticate(headers, client_ip(request))

    @routes.post(ASYNC_CHAT, summary="Queue a chat completion", status_code=202)
    async def create_async_chat(request: Request) -> Response:
        async def read_body() -> dict[str, Any]:
            body = await read_json_object(request, deps.settings.max_body_bytes)
            body.pop("stream", None)
            return body

        job = await _submit(deps.submission, request, "chat", read_body=read_body)
        return _json({"job_id": job["job_id"], "status": job["status"]}, 202)

    @routes.get(ASYNC_CHAT + "/{job_id}", summary="A job's status, and its chat completion when done")
    async def get_async_chat(job_id: str, request: Request) -> Response:
        return _json((await _owned(deps.jobs, await caller(request), job_id)).public())

    @routes.delete(ASYNC_CHAT + "/{job_id}", summary="Cancel a job")
    async def cancel_async_chat(job_id: str, request: Request) -> Response:
        job = await _owned(deps.jobs, await caller(request), job_id)
        if job.status in ("completed", "failed"):
            raise APIError(409, f"The job `{job_id}` is already {job.status}.", code="job_not_cancellable")
        if await deps.jobs.finish(job, "cancelled"):
            await deps.jobs.add_event(job_id, "status", {"status": "cancelled"})
        return _json({"job_id": job_id, "status": "cancelled"})

    @routes.get(ASYNC_CHAT + "/{job_id}/events", summary="A job's status and tokens as server-sent events")
    async def async_chat_events(job_id: str, request: Request) -> Response:
        await _owned(deps.jobs, await caller(request), job_id)
        return _stream(_named_events(deps.jobs, job_id))

    @routes.post("/generate", summary="Queue a generation (task API)", status_code=202)
    async def generate(request: Request) -> Response:
        principal = await caller(request)
        req = validate_body(GenerateRequest, await read_json_object(request, deps.settings.max_body_bytes))
        body = _generate_body(req, deps.settings.default_model or deps.settings.auto_default_model)
        job = await _submit(deps.submission, request, "generate", body=body, principal=principal)
        return _json(_task(job["job_id"], job["status"]), 202)

    @routes.get("/status/{job_id}", summary="A task's status: queued, processing, completed or failed")
    async def status(job_id: str, request: Request) -> Response:
        job = await _owned(deps.jobs, await caller(request), job_id)
        return _json(_task(job.id, job.status, attempts=job.attempts, created_at=int(job.created_at)))

    @routes.get("/result/{job_id}", summary="A task's text and metrics")
    async def result(job_id: str, request: Request) -> Response:
        body, code = _task_result(await _owned(deps.jobs, await caller(request), job_id))
        return _json(body, code)

    @routes.get("/stream/{job_id}", summary="A task's progress as server-sent events (`?api_key=` for EventSource)")
    async def stream(job_id: str, request: Request) -> Response:
        job = await _owned(deps.jobs, await caller(request, query_key=True), job_id)
        return _stream(_task_events(deps.jobs, job))

    @routes.post("/infer", summary="Direct inference for one model, sync or async")
    async def infer(request: Request) -> Response:
        principal = await caller(request)
        req = validate_body(InferRequest, await read_json_object(request, deps.settings.max_body_bytes))
        body = _infer_body(req)
        if req.async_:
            job = await _submit(deps.submission, request, "infer", body=body, principal=principal)
            return _json({"job_id": job["job_id"], "status": job["status"]}, 202)
        answer = await run_request(
            deps.pipeline,
            "chat/completions",
            ChatCompletionRequest,
            body=body,
            headers=request.headers,
            client_ip=client_ip(request),
            principal=principal,
            receive=request.receive,
        )
        if answer is None:
            return Response(status_code=CLIENT_CLOSED)
        assert answer.document is not None  # the body asks for no stream
        return _json(_infer_document(answer.model, answer.document.json()))

    return routes
