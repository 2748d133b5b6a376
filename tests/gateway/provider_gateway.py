"""A gateway app over a providers file of a test module's own (the enterprise providers' tests): the
fleet's auth and registry, the module's fakes, the environment it sets, and its log lines."""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import openai
import pytest
import yaml

from iir_gateway.app import create_asgi
from tests.gateway.conftest import Fleet, Gateway, logged_lines
from tests.gateway.servers import lifespan
from tests.json_values import json_object


@contextlib.asynccontextmanager
async def gateway_with_providers(
    fleet: Fleet, name: str, providers: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> AsyncIterator[tuple[Gateway, io.StringIO]]:
    """The gateway with `providers` as its providers file and `env` set while it runs."""
    path = fleet.workdir / f"providers-{name}.yaml"
    path.write_text(yaml.safe_dump({"providers": dict(providers)}))
    settings = fleet.settings(providers_file=str(path), upstream_read_timeout_s=5, job_workers=0, batch_concurrency=0)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in (env or {}).items():
            patch.setenv(key, value)
        app = create_asgi(settings)
        with logged_lines() as log:
            async with lifespan(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", timeout=30) as client:
                    yield Gateway(app, client), log


def error_of(resp: httpx.Response) -> dict[str, Any]:
    """An OpenAI error answer's `error` object."""
    return json_object(resp.json()["error"])


async def streamed(
    client: openai.AsyncOpenAI, model: str, heard: str, completion_tokens: int
) -> list[openai.types.chat.ChatCompletionChunk]:
    """A stream through the provider, checked: the fake's answer to "Stream this please" chunk by chunk (not
    buffered into one), one finish, and the usage asked for last. Its chunks, for the caller's own checks."""
    stream = await client.chat.completions.create(
        model=model,
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Stream this please"}],
    )
    chunks = [c async for c in stream]
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == f"{heard} heard: Stream this please"
    )
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 3  # not buffered into one
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == completion_tokens
    return chunks
