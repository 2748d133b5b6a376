"""OpenAI's Batch API: `/v1/files` (upload a JSONL of requests, read the output) and `/v1/batches`
(run one in the background, follow it, cancel it). Files and batches belong to the key that made them."""

from __future__ import annotations

import contextlib
from typing import Any, Protocol

from fastapi import APIRouter, Request
from starlette.responses import Response

from iir_gateway.accounting.storage_quota import StorageQuota, scopes_of
from iir_gateway.batches.files import FileStore
from iir_gateway.batches.scrubbed_upload import ScrubbedLines
from iir_gateway.batches.store import FINAL, QUOTA_TTL_S, WINDOW_S, BatchStore, batch_object
from iir_gateway.batches.upload import UploadRefused, receive_upload
from iir_gateway.errors import APIError, invalid_value
from iir_gateway.inbound.routes import batch_endpoints
from iir_gateway.pipeline.steps.admit import Limiter
from iir_gateway.pipeline.steps.authenticate import KeyCheck
from iir_gateway.principal import Principal
from iir_gateway.scrubbing.policy import Scrubbing
from iir_gateway.server.bodies import client_ip, json_response, page_response, read_json_object

_ENDPOINTS = batch_endpoints()  # the paths a batch may run, from the one route table


class BatchRouteSettings(Protocol):
    """The settings the file and batch routes read."""

    @property
    def max_body_bytes(self) -> int: ...
    @property
    def batch_max_file_bytes(self) -> int: ...
    @property
    def batch_max_lines(self) -> int: ...


class BatchRouteDeps(Protocol):
    """What the file and batch routes use of the runtime."""

    @property
    def settings(self) -> BatchRouteSettings: ...
    @property
    def auth(self) -> KeyCheck: ...
    @property
    def limiter(self) -> Limiter: ...
    @property
    def scrubbing(self) -> Scrubbing: ...
    @property
    def files(self) -> FileStore: ...
    @property
    def batches(self) -> BatchStore: ...
    @property
    def storage_quota(self) -> StorageQuota: ...


def _no_file(file_id: str) -> APIError:
    return APIError(404, f"No such File object: {file_id}", code="file_not_found", param="file_id")


def _no_batch(batch_id: str) -> APIError:
    return APIError(404, f"No batch {batch_id!r}.", code="batch_not_found")


def _metadata(value: Any) -> dict[str, str] | None:
    """OpenAI's metadata: at most 16 pairs, keys up to 64 characters, string values up to 512."""
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > 16:
        raise invalid_value("metadata must be an object of at most 16 pairs.", "metadata")
    for key, item in value.items():
        if len(key) > 64 or not isinstance(item, str) or len(item) > 512:
            raise invalid_value("metadata keys may have 64 characters and values must be strings of 512.", "metadata")
    return value


async def _reserve_batch(deps: BatchRouteDeps, principal: Principal, batch_id: str) -> None:
    """Counts the batch among the key's unfinished ones (429 when it has as many as it may); batches that
    ended since are released first."""
    quota = deps.storage_quota
    scopes = scopes_of(principal)
    for held in await quota.members("batches", scopes[0]):
        record = await deps.batches.record(held)
        if record is None or record["batch"]["status"] in FINAL:
            await quota.release("batches", scopes, held)
    # Its output and error files are written whatever the file quota (their tokens are paid): a batch may
    # not start while the quota is full, so a key holds at most its quota plus its unfinished batches' output.
    await quota.check("files", scopes)
    await quota.reserve("batches", scopes, batch_id, 0, QUOTA_TTL_S)


def router(deps: BatchRouteDeps) -> APIRouter:
    """The file and batch routes, over `deps`."""
    routes = APIRouter(tags=["Batches"])

    async def caller(request: Request) -> Principal:
        return await deps.auth.authenticate(request.headers, client_ip(request))

    @routes.post("/v1/files", summary="Upload a file (purpose `batch`: a JSONL of requests)")
    async def upload_file(request: Request) -> Response:
        principal = await caller(request)
        declared = request.headers.get("content-length", "")
        if not declared.isdigit():  # the middleware's size check and the quota's reservation need it
            raise APIError(411, "Uploads need a Content-Length header.", code="length_required")
        # An upload is a request against the key's RPM and budgets, like any other.
        await deps.limiter.settle(principal, await deps.limiter.admit(principal, 0), 0)
        upload = await deps.files.begin(principal, int(declared))  # 429 when the key's storage is full
        # Stored as it would be sent: each line scrubbed (a 400 `secret_detected` in block mode).
        lines = ScrubbedLines(deps.scrubbing, deps.scrubbing.mode(principal.scrub_mode), upload.write)
        try:
            received = await receive_upload(
                request.headers.get("content-type", ""),
                request.stream(),
                lines.write,
                deps.settings.batch_max_file_bytes,
                deps.settings.batch_max_lines,
                deps.settings.max_body_bytes,  # a line is a request body
            )
            await lines.close()
            if not received.has_file:
                raise invalid_value("A `file` part is required.", "file")
            if received.fields.get("purpose") != "batch":
                raise invalid_value("Only purpose `batch` is supported.", "purpose")
            if received.lines == 0:
                raise invalid_value("The file has no requests.", "file")
            meta = await upload.commit(received.filename, "batch")
        except UploadRefused as exc:
            await upload.abort()
            raise APIError(exc.status, exc.message, code=exc.code, param=exc.param) from None
        except BaseException:
            with contextlib.suppress(Exception):  # its partial content expires anyway
                await upload.abort()
            raise
        return json_response(meta)

    @routes.get("/v1/files", summary="The key's files, newest first")
    async def list_files(
        request: Request, purpose: str | None = None, after: str | None = None, limit: int = 10000, order: str = "desc"
    ) -> Response:
        principal = await caller(request)
        if order not in ("asc", "desc"):
            raise invalid_value("order must be asc or desc.", "order")
        page, more = await deps.files.list(principal, purpose, after, max(1, min(limit, 10000)), order)
        return page_response(page, more)

    @routes.get("/v1/files/{file_id}", summary="A file's metadata")
    async def get_file(file_id: str, request: Request) -> Response:
        principal = await caller(request)
        meta = await deps.files.get(file_id, principal)
        if meta is None:
            raise _no_file(file_id)
        return json_response(meta)

    @routes.get("/v1/files/{file_id}/content", summary="A file's content")
    async def file_content(file_id: str, request: Request) -> Response:
        principal = await caller(request)
        content = await deps.files.content(file_id, principal)
        if content is None:
            raise _no_file(file_id)
        return Response(content, media_type="application/jsonl")

    @routes.delete("/v1/files/{file_id}", summary="Delete a file")
    async def delete_file(file_id: str, request: Request) -> Response:
        principal = await caller(request)
        if not await deps.files.delete(file_id, principal):
            raise _no_file(file_id)
        return json_response({"id": file_id, "object": "file", "deleted": True})

    @routes.post("/v1/batches", summary="Run a file of requests in the background")
    async def create_batch(request: Request) -> Response:
        principal = await caller(request)
        body = await read_json_object(request, deps.settings.max_body_bytes)
        endpoint, window, input_file_id = body.get("endpoint"), body.get("completion_window"), body.get("input_file_id")
        if not isinstance(endpoint, str) or endpoint not in _ENDPOINTS:
            raise invalid_value(f"endpoint must be one of {', '.join(_ENDPOINTS)}.", "endpoint")
        if not isinstance(window, str) or window not in WINDOW_S:
            raise invalid_value("completion_window must be 24h.", "completion_window")
        if not isinstance(input_file_id, str) or not input_file_id:
            raise invalid_value("input_file_id must be the id of an uploaded file.", "input_file_id")
        metadata = _metadata(body.get("metadata"))
        meta = await deps.files.get(input_file_id, principal)
        if meta is None or meta["purpose"] != "batch":
            raise invalid_value(f"No batch input file {input_file_id[:100]!r}.", "input_file_id")
        batch = batch_object(deps.batches.new_id(), endpoint, input_file_id, window, metadata)
        await _reserve_batch(deps, principal, batch["id"])
        await deps.batches.create(principal, batch)
        return json_response(batch)

    @routes.get("/v1/batches", summary="The key's batches, newest first")
    async def list_batches(request: Request, after: str | None = None, limit: int = 20) -> Response:
        principal = await caller(request)
        page, more = await deps.batches.list(principal, after, max(1, min(limit, 100)))
        return page_response(page, more)

    @routes.get("/v1/batches/{batch_id}", summary="A batch: status, counts, output and error files")
    async def get_batch(batch_id: str, request: Request) -> Response:
        principal = await caller(request)
        batch = await deps.batches.get(batch_id, principal)
        if batch is None:
            raise _no_batch(batch_id)
        return json_response(batch)

    @routes.post("/v1/batches/{batch_id}/cancel", summary="Cancel a batch (lines already run keep their results)")
    async def cancel_batch(batch_id: str, request: Request) -> Response:
        principal = await caller(request)
        batch = await deps.batches.get(batch_id, principal)
        if batch is None:
            raise _no_batch(batch_id)
        if batch["status"] in FINAL or batch["status"] == "finalizing":
            raise APIError(409, f"The batch is already {batch['status']}.", code="batch_not_cancellable")
        updated = await deps.batches.cancel(batch_id)
        if updated is None:
            raise _no_batch(batch_id)
        return json_response(updated)

    return routes
