"""The task API of the first design: `/generate` queues a job, `/status`, `/result` and `/stream` follow
it, with the task API's names for its status. Jobs are queued through the submission pipeline."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from iir_gateway.inference.jobs_common import event_stream, job_events, owned, submit
from iir_gateway.jobs.store import FINAL, Job, JobStore
from iir_gateway.keys.authenticator import extract_key
from iir_gateway.pipeline.pipeline import Pipeline
from iir_gateway.pipeline.steps.authenticate import KeyCheck
from iir_gateway.principal import Principal
from iir_gateway.schemas import validate_body
from iir_gateway.server.bodies import client_ip, json_response, read_json_object


class TaskRouteSettings(Protocol):
    """The settings the task routes read."""

    @property
    def max_body_bytes(self) -> int: ...
    @property
    def default_model(self) -> str: ...
    @property
    def auto_default_model(self) -> str: ...


class TaskRouteDeps(Protocol):
    """What the task routes use of the runtime."""

    @property
    def settings(self) -> TaskRouteSettings: ...
    @property
    def auth(self) -> KeyCheck: ...
    @property
    def jobs(self) -> JobStore: ...
    @property
    def submission(self) -> Pipeline:
        """The submission pipeline: every task is queued through it."""
        ...


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


# The terminal event's id: a browser's `EventSource` reconnects with it in `Last-Event-ID` (when the page
# did not close it), and gets 204, which tells it to stop reconnecting.
FINAL_EVENT_ID = "final"


def _event(data: dict[str, Any], event_id: str = "") -> bytes:
    head = f"id: {event_id}\n".encode() if event_id else b""
    return head + b"data: " + orjson.dumps(data) + b"\n\n"


def _final_event(job: Job) -> bytes:
    body, _ = _task_result(job)
    return _event({**body, "status": _task_status(job.status)}, FINAL_EVENT_ID)


async def _task_events(jobs: JobStore, job: Job) -> AsyncIterator[bytes]:
    """The task's progress as unnamed events (what a browser's `EventSource.onmessage` receives): the
    current state first (`{"status", "task_id", "message"}`), each token so far and then as it comes as
    `token`, and at the end one terminal event, `completed` with the result or `failed` with the error.
    A task already final gets its terminal event alone."""
    if job.status in FINAL:
        yield _final_event(job)
        return
    yield _event(_task(job.id, job.status))
    async for kind, raw in job_events(jobs, job.id):
        if not kind:
            yield b": keep-alive\n\n"
        elif kind == "token":
            choices = orjson.loads(raw).get("choices") or [{}]
            token = (choices[0].get("delta") or {}).get("content")
            if token:
                yield _event(_task(job.id, "running", token=token))
        elif kind == "restart":
            yield _event(_task(job.id, "running", restart=True))
        elif kind == "status" and (status := orjson.loads(raw).get("status", "")) not in FINAL:
            yield _event(_task(job.id, status))
    # The stream ended: at the job's final status, or its events expired. Either way, the job as stored.
    final = await jobs.get(job.id)
    if final is not None and final.status in FINAL:
        yield _final_event(final)


def router(deps: TaskRouteDeps) -> APIRouter:
    """The task routes, over `deps`."""
    routes = APIRouter(tags=["Async jobs"])

    async def caller(request: Request, query_key: bool = False) -> Principal:
        """With `query_key`, a key in `?api_key=` counts too (a browser's `EventSource` cannot send
        headers); the access log never shows the query string."""
        headers: Mapping[str, str] = request.headers
        key = request.query_params.get("api_key") if query_key else None
        if key and extract_key(headers) is None:
            headers = {**headers, "authorization": f"Bearer {key}"}
        return await deps.auth.authenticate(headers, client_ip(request))

    @routes.post("/generate", summary="Queue a generation (task API)", status_code=202)
    async def generate(request: Request) -> Response:
        principal = await caller(request)
        req = validate_body(GenerateRequest, await read_json_object(request, deps.settings.max_body_bytes))
        body = _generate_body(req, deps.settings.default_model or deps.settings.auto_default_model)
        job = await submit(deps.submission, request, "generate", body=body, principal=principal)
        return json_response(_task(job["job_id"], job["status"]), 202)

    @routes.get("/status/{job_id}", summary="A task's status: queued, processing, completed or failed")
    async def status(job_id: str, request: Request) -> Response:
        job = await owned(deps.jobs, await caller(request), job_id)
        return json_response(_task(job.id, job.status, attempts=job.attempts, created_at=int(job.created_at)))

    @routes.get("/result/{job_id}", summary="A task's text and metrics")
    async def result(job_id: str, request: Request) -> Response:
        body, code = _task_result(await owned(deps.jobs, await caller(request), job_id))
        return json_response(body, code)

    @routes.get("/stream/{job_id}", summary="A task's progress as server-sent events (`?api_key=` for EventSource)")
    async def stream(job_id: str, request: Request) -> Response:
        job = await owned(deps.jobs, await caller(request, query_key=True), job_id)
        if request.headers.get("last-event-id") == FINAL_EVENT_ID:
            return Response(status_code=204)  # the terminal event was delivered: EventSource stops here
        return event_stream(_task_events(deps.jobs, job))

    return routes
