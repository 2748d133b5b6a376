"""OpenAI's Batch API on IIR, through the official `openai` SDK: upload a JSONL file, run it, read the
output and error files; bad lines fail alone; files and batches belong to their key; cancelling."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import openai
import pytest

from iir_dev.stack import Stack
from tests.conftest import EMBEDDER, SERVED
from tests.waiting import wait_for

MODEL = f"local/{SERVED}"


def jsonl(lines: Sequence[dict[str, Any] | str]) -> bytes:
    return b"".join((line if isinstance(line, str) else json.dumps(line)).encode() + b"\n" for line in lines)


def chat_line(custom_id: str, text: str, model: str = MODEL) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 5}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def finished(client: openai.OpenAI, batch_id: str, timeout: float = 30) -> openai.types.Batch:
    def final() -> openai.types.Batch | None:
        batch = client.batches.retrieve(batch_id)
        return batch if batch.status in ("completed", "failed", "expired", "cancelled") else None

    return wait_for(final, timeout=timeout, interval=0.2, what=f"batch {batch_id} to end")


def test_a_batch_end_to_end(openai_client: openai.OpenAI) -> None:
    lines: list[dict[str, Any] | str] = [chat_line(f"req-{i}", f"question {i}") for i in range(5)]
    lines.insert(2, "this is not json")
    lines.append(chat_line("bad-model", "x", model="local/nope"))
    uploaded = openai_client.files.create(file=("input.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    assert uploaded.object == "file" and uploaded.purpose == "batch" and uploaded.bytes > 0
    batch = openai_client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h", metadata={"run": "1"}
    )
    assert batch.status == "validating" and batch.metadata == {"run": "1"}
    done = finished(openai_client, batch.id)
    assert done.status == "completed" and done.completed_at and done.in_progress_at
    assert done.request_counts.total == 7 and done.request_counts.completed == 5 and done.request_counts.failed == 2  # type: ignore[union-attr]
    output = [json.loads(line) for line in openai_client.files.content(done.output_file_id).text.splitlines()]  # type: ignore[arg-type]
    assert [o["custom_id"] for o in output] == [f"req-{i}" for i in range(5)]  # the input's order
    assert all(o["response"]["status_code"] == 200 and o["response"]["body"]["choices"] for o in output)
    errors = [json.loads(line) for line in openai_client.files.content(done.error_file_id).text.splitlines()]  # type: ignore[arg-type]
    assert errors[0]["error"]["code"] == "invalid_request" and errors[0]["response"] is None
    assert errors[1]["custom_id"] == "bad-model" and errors[1]["response"]["status_code"] == 404
    assert openai_client.batches.list().data[0].id == batch.id


def test_embeddings_batches(openai_client: openai.OpenAI) -> None:
    line = {
        "custom_id": "e1",
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": f"local/{EMBEDDER}", "input": "hi"},
    }
    uploaded = openai_client.files.create(file=("e.jsonl", io.BytesIO(jsonl([line]))), purpose="batch")
    batch = openai_client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h")
    done = finished(openai_client, batch.id)
    output = json.loads(openai_client.files.content(done.output_file_id).text)  # type: ignore[arg-type]
    assert output["response"]["body"]["data"][0]["embedding"]


def test_files_and_batches_belong_to_their_key(stack: Stack, openai_client: openai.OpenAI) -> None:
    uploaded = openai_client.files.create(file=("i.jsonl", io.BytesIO(jsonl([chat_line("a", "b")]))), purpose="batch")
    other = openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=stack.create_key("other-batches"), max_retries=0)
    with pytest.raises(openai.NotFoundError):
        other.files.retrieve(uploaded.id)
    with pytest.raises(openai.BadRequestError):
        other.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    batch = openai_client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    with pytest.raises(openai.NotFoundError):
        other.batches.retrieve(batch.id)
    finished(openai_client, batch.id)
    assert openai_client.files.delete(uploaded.id).deleted
    with pytest.raises(openai.NotFoundError):
        openai_client.files.retrieve(uploaded.id)


def test_bad_uploads_and_batches_are_refused(stack: Stack, api_key: str, openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        openai_client.files.create(file=("x.jsonl", io.BytesIO(b"")), purpose="batch")
    with pytest.raises(openai.BadRequestError):
        openai_client.files.create(file=("x.jsonl", io.BytesIO(b"{}\n")), purpose="fine-tune")
    uploaded = openai_client.files.create(file=("x.jsonl", io.BytesIO(jsonl([chat_line("a", "b")]))), purpose="batch")
    with pytest.raises(openai.BadRequestError):
        openai_client.batches.create(input_file_id=uploaded.id, endpoint="/v1/images", completion_window="24h")  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError):
        openai_client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="1h")  # type: ignore[arg-type]
    not_multipart = httpx.post(f"{stack.gateway_url}/v1/files", headers={"authorization": f"Bearer {api_key}"}, json={})
    assert not_multipart.status_code == 400 and not_multipart.json()["error"]["message"]


def test_cancelling_a_batch(openai_client: openai.OpenAI) -> None:
    lines = [
        chat_line(f"slow-{i}", "x", model="local/slow")
        | {"body": {"model": "local/slow", "messages": [{"role": "user", "content": "x"}], "max_tokens": 8}}
        for i in range(20)
    ]
    uploaded = openai_client.files.create(file=("s.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    batch = openai_client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    cancelling = openai_client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling"
    done = finished(openai_client, batch.id)
    assert done.status == "cancelled" and done.cancelled_at
    assert done.request_counts.completed < 20  # type: ignore[union-attr]


def test_a_responses_batch(openai_client: openai.OpenAI) -> None:
    body = {"model": MODEL, "input": "Hello", "instructions": "Be brief."}
    line = {"custom_id": "r1", "method": "POST", "url": "/v1/responses", "body": body}
    uploaded = openai_client.files.create(file=("r.jsonl", io.BytesIO(jsonl([line]))), purpose="batch")
    batch = openai_client.batches.create(input_file_id=uploaded.id, endpoint="/v1/responses", completion_window="24h")
    done = finished(openai_client, batch.id)
    output = json.loads(openai_client.files.content(done.output_file_id).text)  # type: ignore[arg-type]
    assert (
        output["response"]["body"]["object"] == "response"
        and output["response"]["body"]["output"][0]["type"] == "message"
    )


def test_an_upload_without_a_length_is_refused(stack: Stack, api_key: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'--x\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n--x--\r\n'

    resp = httpx.post(
        f"{stack.gateway_url}/v1/files",
        headers={"authorization": f"Bearer {api_key}", "content-type": "multipart/form-data; boundary=x"},
        content=chunks(),
    )
    assert resp.status_code == 411
