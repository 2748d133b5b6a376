"""The README's examples of the Responses (HTTP and WebSocket), Messages and Batch APIs and of structured
outputs, run as written against a stack (only the base URL and the key stand for this stack's)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from iir_dev.stack import Stack

README = Path(__file__).resolve().parents[2] / "README.md"


def _examples() -> list[str]:
    text = README.read_text()
    section = text[text.index("## The Responses, Messages and Batch APIs") : text.index("## Async jobs")]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.mark.parametrize(
    "code", _examples(), ids=["responses", "responses-websocket", "messages", "batches", "structured-outputs"]
)
def test_a_readme_example(stack: Stack, api_key: str, code: str) -> None:
    socket_url = stack.gateway_url.replace("http://", "ws://")
    code = code.replace("http://127.0.0.1:8080", stack.gateway_url).replace("ws://127.0.0.1:8080", socket_url)
    code = code.replace('"iir-…"', repr(api_key))
    exec(compile(code, "README.md", "exec"), {})
