"""OpenAI's Batch API on IIR, through the official `openai` SDK and the gateway app's batch runner: upload a
JSONL file, run it, read the output and error files; bad lines fail alone; files and batches belong to their
key; cancelling (moved from tests/integration/test_batches.py; an upload without a length stays there)."""

from __future__ import annotations

import io
import json
from typing import Any

import openai
import pytest

from tests.conftest import EMBEDDER
from tests.gateway.conftest import Fleet, Gateway, openai_sdk
from tests.integration.test_batches import MODEL, chat_line, jsonl
from tests.waiting import eventually


async def finished(client: openai.AsyncOpenAI, batch_id: str, timeout: float = 30) -> openai.types.Batch:
    async def final() -> openai.types.Batch | None:
        batch = await client.batches.retrieve(batch_id)
        return batch if batch.status in ("completed", "failed", "expired", "cancelled") else None

    done: openai.types.Batch = await eventually(final, timeout=timeout)
    return done


async def test_a_batch_end_to_end(openai_client: openai.AsyncOpenAI) -> None:
    lines: list[dict[str, Any] | str] = [chat_line(f"req-{i}", f"question {i}") for i in range(5)]
    lines.insert(2, "this is not json")
    lines.append(chat_line("bad-model", "x", model="local/nope"))
    uploaded = await openai_client.files.create(file=("input.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    assert uploaded.object == "file" and uploaded.purpose == "batch" and uploaded.bytes > 0
    batch = await openai_client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h", metadata={"run": "1"}
    )
    assert batch.status == "validating" and batch.metadata == {"run": "1"}
    done = await finished(openai_client, batch.id)
    assert done.status == "completed" and done.completed_at and done.in_progress_at
    assert done.request_counts is not None and done.output_file_id and done.error_file_id
    assert done.request_counts.total == 7 and done.request_counts.completed == 5 and done.request_counts.failed == 2
    output = [json.loads(line) for line in (await openai_client.files.content(done.output_file_id)).text.splitlines()]
    assert [o["custom_id"] for o in output] == [f"req-{i}" for i in range(5)]  # the input's order
    assert all(o["response"]["status_code"] == 200 and o["response"]["body"]["choices"] for o in output)
    # Read against OpenAI's schema: no null where it allows none (vLLM writes these as null).
    bodies = [o["response"]["body"] for o in output]
    messages = [c["message"] for b in bodies for c in b["choices"]]
    assert not any(m.get(k, 0) is None for m in messages for k in ("annotations", "function_call", "audio"))
    assert not any(b["usage"].get("prompt_tokens_details", 0) is None for b in bodies)
    assert all("refusal" in m and "content" in m for m in messages)  # required, null allowed
    errors = [json.loads(line) for line in (await openai_client.files.content(done.error_file_id)).text.splitlines()]
    assert errors[0]["error"]["code"] == "invalid_request" and errors[0]["response"] is None
    assert errors[1]["custom_id"] == "bad-model" and errors[1]["response"]["status_code"] == 404
    assert (await openai_client.batches.list()).data[0].id == batch.id


async def test_embeddings_batches(openai_client: openai.AsyncOpenAI) -> None:
    line = {
        "custom_id": "e1",
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": f"local/{EMBEDDER}", "input": "hi"},
    }
    uploaded = await openai_client.files.create(file=("e.jsonl", io.BytesIO(jsonl([line]))), purpose="batch")
    batch = await openai_client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    done = await finished(openai_client, batch.id)
    assert done.output_file_id
    output = json.loads((await openai_client.files.content(done.output_file_id)).text)
    assert output["response"]["body"]["data"][0]["embedding"]


async def test_files_and_batches_belong_to_their_key(
    gateway: Gateway, fleet: Fleet, openai_client: openai.AsyncOpenAI
) -> None:
    uploaded = await openai_client.files.create(
        file=("i.jsonl", io.BytesIO(jsonl([chat_line("a", "b")]))), purpose="batch"
    )
    async with openai_sdk(gateway, await fleet.create_key("other-batches")) as other:
        with pytest.raises(openai.NotFoundError):
            await other.files.retrieve(uploaded.id)
        with pytest.raises(openai.BadRequestError):
            await other.batches.create(
                input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
        batch = await openai_client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        with pytest.raises(openai.NotFoundError):
            await other.batches.retrieve(batch.id)
    await finished(openai_client, batch.id)
    assert (await openai_client.files.delete(uploaded.id)).deleted
    with pytest.raises(openai.NotFoundError):
        await openai_client.files.retrieve(uploaded.id)


async def test_bad_uploads_and_batches_are_refused(
    gateway: Gateway, api_key: str, openai_client: openai.AsyncOpenAI
) -> None:
    with pytest.raises(openai.BadRequestError):
        await openai_client.files.create(file=("x.jsonl", io.BytesIO(b"")), purpose="batch")
    with pytest.raises(openai.BadRequestError):
        await openai_client.files.create(file=("x.jsonl", io.BytesIO(b"{}\n")), purpose="fine-tune")
    uploaded = await openai_client.files.create(
        file=("x.jsonl", io.BytesIO(jsonl([chat_line("a", "b")]))), purpose="batch"
    )
    with pytest.raises(openai.BadRequestError):
        await openai_client.batches.create(input_file_id=uploaded.id, endpoint="/v1/images", completion_window="24h")  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError):
        await openai_client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window="1h",  # type: ignore[arg-type]
        )
    not_multipart = await gateway.client.post("/v1/files", headers={"authorization": f"Bearer {api_key}"}, json={})
    assert not_multipart.status_code == 400 and not_multipart.json()["error"]["message"]


async def test_cancelling_a_batch(openai_client: openai.AsyncOpenAI) -> None:
    lines = [
        chat_line(f"slow-{i}", "x", model="local/slow")
        | {"body": {"model": "local/slow", "messages": [{"role": "user", "content": "x"}], "max_tokens": 8}}
        for i in range(20)
    ]
    uploaded = await openai_client.files.create(file=("s.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    batch = await openai_client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    cancelling = await openai_client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling"
    done = await finished(openai_client, batch.id)
    assert done.status == "cancelled" and done.cancelled_at
    assert done.request_counts is not None and done.request_counts.completed < 20


async def test_a_responses_batch(openai_client: openai.AsyncOpenAI) -> None:
    body = {"model": MODEL, "input": "Hello", "instructions": "Be brief."}
    line = {"custom_id": "r1", "method": "POST", "url": "/v1/responses", "body": body}
    uploaded = await openai_client.files.create(file=("r.jsonl", io.BytesIO(jsonl([line]))), purpose="batch")
    batch = await openai_client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/responses", completion_window="24h"
    )
    done = await finished(openai_client, batch.id)
    assert done.output_file_id
    output = json.loads((await openai_client.files.content(done.output_file_id)).text)
    assert (
        output["response"]["body"]["object"] == "response"
        and output["response"]["body"]["output"][0]["type"] == "message"
    )


async def test_files_are_listed_in_pages(gateway: Gateway, fleet: Fleet) -> None:
    # OpenAI's ListFilesResponse: first_id, last_id, has_more; `limit`, `after` and `order` honoured.
    async with openai_sdk(gateway, await fleet.create_key("file-pages")) as client:
        ids = [
            (
                await client.files.create(
                    file=(f"{i}.jsonl", io.BytesIO(jsonl([chat_line("a", "b")]))), purpose="batch"
                )
            ).id
            for i in range(3)
        ]
        first = await client.files.with_raw_response.list(limit=2)
        page = json.loads(first.http_response.text)
        assert [f["id"] for f in page["data"]] == ids[::-1][:2]  # newest first
        assert page["first_id"] == ids[2] and page["last_id"] == ids[1] and page["has_more"] is True
        rest = json.loads((await client.files.with_raw_response.list(limit=2, after=ids[1])).http_response.text)
        assert [f["id"] for f in rest["data"]] == [ids[0]] and rest["has_more"] is False
        assert [f.id async for f in client.files.list(order="asc")] == ids  # the SDK follows the pages
        bad = await gateway.client.get(
            "/v1/files?order=sideways", headers={"authorization": f"Bearer {client.api_key}"}
        )
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "order"
