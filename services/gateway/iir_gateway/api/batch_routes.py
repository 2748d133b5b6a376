"""OpenAI's Batch API: `/v1/files` (upload a JSONL of requests, read the output) and `/v1/batches`
(run one in the background, follow it, cancel it). Files and batches belong to the key that made them."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.datastructures import UploadFile
from starlette.responses import Response

from iir_gateway.api.requests import client_ip, read_json_object
from iir_gateway.batches.runner import ENDPOINTS
from iir_gateway.batches.store import FINAL, WINDOW_S, batch_object
from iir_gateway.errors import APIError
from iir_gateway.principal import Principal
from iir_gateway.runtime import Runtime

router = APIRouter(tags=["Batches"])


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


async def _caller(request: Request) -> tuple[Runtime, Principal]:
    gw: Runtime = request.app.state.gateway
    return gw, await gw.auth.authenticate(request.headers, client_ip(request))


def _no_file(file_id: str) -> APIError:
    return APIError(404, f"No such File object: {file_id}", code="file_not_found", param="file_id")


def _no_batch(batch_id: str) -> APIError:
    return APIError(404, f"No batch {batch_id!r}.", code="batch_not_found")


def _bad(message: str, param: str | None = None) -> APIError:
    return APIError(400, message, code="invalid_value", param=param)


@router.post("/v1/files", summary="Upload a file (purpose `batch`: a JSONL of requests)")
async def upload_file(request: Request) -> Response:
    gw, principal = await _caller(request)
    if not request.headers.get("content-length", "").isdigit():  # the middleware's size check needs it
        raise APIError(411, "Uploads need a Content-Length header.", code="length_required")
    try:
        form = await request.form(max_files=1, max_fields=10, max_part_size=gw.settings.batch_max_file_bytes)
    except Exception as exc:  # not multipart, or a part over the limit
        raise _bad(f"Send the file as multipart/form-data with `file` and `purpose` ({exc}).") from None
    try:
        upload, purpose = form.get("file"), form.get("purpose")
        if not isinstance(upload, UploadFile):
            raise _bad("A `file` part is required.", "file")
        if purpose != "batch":
            raise _bad("Only purpose `batch` is supported.", "purpose")
        content = await upload.read(gw.settings.batch_max_file_bytes + 1)
        filename = upload.filename or "batch.jsonl"
    finally:
        await form.close()  # the spooled temporary file
    if len(content) > gw.settings.batch_max_file_bytes:
        raise APIError(413, f"A batch file may hold {gw.settings.batch_max_file_bytes} bytes.", code="file_too_large")
    lines = sum(1 for line in content.splitlines() if line.strip())
    if lines == 0:
        raise _bad("The file has no requests.", "file")
    if lines > gw.settings.batch_max_lines:
        raise _bad(f"A batch file may hold {gw.settings.batch_max_lines} requests; this one has {lines}.", "file")
    meta = await gw.files.create(principal.key_id, filename, "batch", content)
    return _json(meta)


@router.get("/v1/files", summary="The key's files")
async def list_files(request: Request, purpose: str | None = None) -> Response:
    gw, principal = await _caller(request)
    return _json({"object": "list", "data": await gw.files.list(principal, purpose), "has_more": False})


@router.get("/v1/files/{file_id}", summary="A file's metadata")
async def get_file(file_id: str, request: Request) -> Response:
    gw, principal = await _caller(request)
    meta = await gw.files.get(file_id, principal)
    if meta is None:
        raise _no_file(file_id)
    return _json(meta)


@router.get("/v1/files/{file_id}/content", summary="A file's content")
async def file_content(file_id: str, request: Request) -> Response:
    gw, principal = await _caller(request)
    content = await gw.files.content(file_id, principal)
    if content is None:
        raise _no_file(file_id)
    return Response(content, media_type="application/jsonl")


@router.delete("/v1/files/{file_id}", summary="Delete a file")
async def delete_file(file_id: str, request: Request) -> Response:
    gw, principal = await _caller(request)
    if not await gw.files.delete(file_id, principal):
        raise _no_file(file_id)
    return _json({"id": file_id, "object": "file", "deleted": True})


@router.post("/v1/batches", summary="Run a file of requests in the background")
async def create_batch(request: Request) -> Response:
    gw, principal = await _caller(request)
    body = await read_json_object(request, gw.settings.max_body_bytes)
    endpoint, window = body.get("endpoint"), body.get("completion_window")
    if endpoint not in ENDPOINTS:
        raise _bad(f"endpoint must be one of {', '.join(ENDPOINTS)}.", "endpoint")
    if window not in WINDOW_S:
        raise _bad("completion_window must be 24h.", "completion_window")
    input_file_id = str(body.get("input_file_id") or "")
    meta = await gw.files.get(input_file_id, principal)
    if meta is None or meta["purpose"] != "batch":
        raise _bad(f"No batch input file {input_file_id!r}.", "input_file_id")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise _bad("metadata must be an object.", "metadata")
    batch = batch_object(gw.batches.new_id(), str(endpoint), input_file_id, str(window), metadata)
    await gw.batches.create(principal, batch)
    return _json(batch)


@router.get("/v1/batches", summary="The key's batches, newest first")
async def list_batches(request: Request, after: str | None = None, limit: int = 20) -> Response:
    gw, principal = await _caller(request)
    page, more = await gw.batches.list(principal, after, max(1, min(limit, 100)))
    return _json(
        {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": more,
        }
    )


@router.get("/v1/batches/{batch_id}", summary="A batch: status, counts, output and error files")
async def get_batch(batch_id: str, request: Request) -> Response:
    gw, principal = await _caller(request)
    batch = await gw.batches.get(batch_id, principal)
    if batch is None:
        raise _no_batch(batch_id)
    return _json(batch)


@router.post("/v1/batches/{batch_id}/cancel", summary="Cancel a batch (lines already run keep their results)")
async def cancel_batch(batch_id: str, request: Request) -> Response:
    gw, principal = await _caller(request)
    batch = await gw.batches.get(batch_id, principal)
    if batch is None:
        raise _no_batch(batch_id)
    if batch["status"] in FINAL or batch["status"] == "finalizing":
        raise APIError(409, f"The batch is already {batch['status']}.", code="batch_not_cancellable")
    updated = await gw.batches.cancel(batch_id)
    if updated is None:
        raise _no_batch(batch_id)
    return _json(updated)
