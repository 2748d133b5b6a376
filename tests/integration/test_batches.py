"""The Batch API over a real socket: an upload without a length is refused; and the batch file helpers of
the process-level tests (the API itself is tested through the gateway app in tests/gateway/test_batches.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import openai

from iir_dev.stack import Stack
from tests.conftest import SERVED
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


def test_an_upload_without_a_length_is_refused(stack: Stack, api_key: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'--x\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n--x--\r\n'

    resp = httpx.post(
        f"{stack.gateway_url}/v1/files",
        headers={"authorization": f"Bearer {api_key}", "content-type": "multipart/form-data; boundary=x"},
        content=chunks(),
    )
    assert resp.status_code == 411
