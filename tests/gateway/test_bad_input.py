"""Bad input to the Responses, Messages and Batch APIs: each answers its own error shape with a 4xx,
never a 500. (Moved from tests/integration/test_agent_api_bad_input.py.)"""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import SERVED

MODEL = f"local/{SERVED}"
JUNK: list[object] = [
    [],
    "text",
    7,
    None,
    {"model": 5},
    {"model": MODEL, "input": {"a": 1}},
    {"model": MODEL, "input": [1, 2]},
    {"model": MODEL, "input": [{"type": "message", "role": "user", "content": 5}]},
    {"model": MODEL, "input": [{"type": "message", "role": "user", "content": [{"type": "input_image"}]}]},
    {"model": MODEL, "input": [{"type": "mystery"}]},
    {"model": MODEL, "input": "x", "tools": [5]},
    {"model": MODEL, "input": "x", "tools": [{"type": "function"}], "tool_choice": 9},
    {"model": MODEL, "input": "x", "text": {"format": {"type": "xml"}}},
    {"model": MODEL, "input": "x", "max_output_tokens": -1},
    {"model": MODEL, "max_tokens": 5, "messages": "hi"},
    {"model": MODEL, "max_tokens": 5, "messages": [5]},
    {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": 5}]},
    {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image", "source": 3}]}]},
    {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "system": 5},
    {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tools": [{"name": 5}]},
    {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": 1}},
    {"model": MODEL, "max_tokens": "many", "messages": []},
    {"input_file_id": 5, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
    {"input_file_id": "file-x", "endpoint": 5, "completion_window": "24h", "metadata": 3},
]


@pytest.mark.parametrize("path", ["/v1/responses", "/v1/messages", "/v1/messages/count_tokens", "/v1/batches"])
async def test_junk_is_a_4xx_in_the_apis_shape(http: httpx.AsyncClient, path: str) -> None:
    for body in JUNK:
        resp = await http.post(path, json=body)
        assert 400 <= resp.status_code < 500 or resp.status_code == 200, (path, body, resp.status_code, resp.text)
        if resp.status_code >= 400:
            data = resp.json()
            if path.startswith("/v1/messages"):
                assert data["type"] == "error" and data["error"]["message"], (body, data)
            else:
                assert data["error"]["message"], (body, data)
    for raw in (b"{", b"\x00\xff", b'{"model": [' * 500):
        resp = await http.post(path, content=raw)
        assert resp.status_code == 400, (path, raw[:20], resp.text)
