"""A gateway app over a providers file of a test module's own (the enterprise providers' tests): the
fleet's auth and registry, the module's fakes, the environment it sets, and its log lines."""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import pytest
import yaml

from iir_gateway.app import create_asgi
from tests.gateway.conftest import Fleet, Gateway, logged_lines
from tests.gateway.servers import lifespan


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
