"""Async jobs over HTTP: the OpenAI-shaped `/v1/async/chat/completions`, and `/infer` (direct inference,
sync or async). Every job is submitted through the submission pipeline (`pipelines.submission_pipeline`);
the task API of the first design is `task_routes`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from iir_gateway.errors import APIError, invalid_value
from iir_gateway.inference.entry import CLIENT_CLOSED, BodyLimit
from iir_gateway.inference.jobs_common import event_stream, job_events, owned, submit
from iir_gateway.jobs.store import JobStore
from iir_gateway.pipeline.entry import run_request
from iir_gateway.pipeline.pipeline import Pipeline
from iir_gateway.pipeline.steps.authenticate import KeyCheck
from iir_gateway.principal import Principal
from iir_gateway.schemas import ChatCompletionRequest, validate_body
from iir_gateway.server.bodies import client_ip, json_response, read_json_object

ASYNC_CHAT = "/v1/async/chat/completions"


class JobRouteDeps(Protocol):
    """What the job routes use of the runtime."""

    @property
    def settings(self) -> BodyLimit: ...
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


async def _named_events(jobs: JobStore, job_id: str) -> AsyncIterator[bytes]:
    async for kind, data in job_events(jobs, job_id):
        yield b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n" if kind else b": keep-alive\n\n"


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
            raise invalid_value("`input` needs a `prompt` or `messages`.", "input")
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

    async def caller(request: Request) -> Principal:
        return await deps.auth.authenticate(request.headers, client_ip(request))

    @routes.post(ASYNC_CHAT, summary="Queue a chat completion", status_code=202)
    async def create_async_chat(request: Request) -> Response:
        async def read_body() -> dict[str, Any]:
            body = await read_json_object(request, deps.settings.max_body_bytes)
            body.pop("stream", None)
            return body

        job = await submit(deps.submission, request, "chat", read_body=read_body)
        return json_response({"job_id": job["job_id"], "status": job["status"]}, 202)

    @routes.get(ASYNC_CHAT + "/{job_id}", summary="A job's status, and its chat completion when done")
    async def get_async_chat(job_id: str, request: Request) -> Response:
        return json_response((await owned(deps.jobs, await caller(request), job_id)).public())

    @routes.delete(ASYNC_CHAT + "/{job_id}", summary="Cancel a job")
    async def cancel_async_chat(job_id: str, request: Request) -> Response:
        job = await owned(deps.jobs, await caller(request), job_id)
        if job.status in ("completed", "failed"):
            raise APIError(409, f"The job `{job_id}` is already {job.status}.", code="job_not_cancellable")
        if await deps.jobs.finish(job, "cancelled"):
            await deps.jobs.add_event(job_id, "status", {"status": "cancelled"})
        return json_response({"job_id": job_id, "status": "cancelled"})

    @routes.get(ASYNC_CHAT + "/{job_id}/events", summary="A job's status and tokens as server-sent events")
    async def async_chat_events(job_id: str, request: Request) -> Response:
        await owned(deps.jobs, await caller(request), job_id)
        return event_stream(_named_events(deps.jobs, job_id))

    @routes.post("/infer", summary="Direct inference for one model, sync or async")
    async def infer(request: Request) -> Response:
        principal = await caller(request)
        req = validate_body(InferRequest, await read_json_object(request, deps.settings.max_body_bytes))
        body = _infer_body(req)
        if req.async_:
            job = await submit(deps.submission, request, "infer", body=body, principal=principal)
            return json_response({"job_id": job["job_id"], "status": job["status"]}, 202)
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
        return json_response(_infer_document(answer.model, answer.document.json()))

    return routes
