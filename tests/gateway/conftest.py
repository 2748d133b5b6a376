"""The gateway built in this process and served through `httpx.ASGITransport`, over the real auth and
registry gRPC servers (real PostgreSQL and Redis), a simulated vLLM and the fakes of external APIs, each
on a random port of this process. Every test of this tier is `async`: they share the event loop with the
servers, which a blocking call would stall."""

from __future__ import annotations

import contextlib
import io
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import grpc
import httpx
import httpx2
import openai
import pytest
import pytest_asyncio
import yaml
from prometheus_client import generate_latest
from starlette.types import ASGIApp

from iir.v1 import auth_pb2, auth_pb2_grpc
from iir_dev.datastores import free_port
from iir_gateway.app import create_asgi
from iir_gateway.server.middleware import RequestContextMiddleware
from iir_gateway.settings import GatewaySettings
from iir_simbackend.app import create_app as create_sim
from iir_simbackend.settings import SimSettings
from tests.conftest import EMBEDDER, MASTER_KEY, SERVED, SERVED_PRICE, SLOW_PRICE, STATIC_KEY, inference_model
from tests.conftest import write_models as write_models_file
from tests.fakes import anthropic_api, openai_api
from tests.gateway.servers import auth_server, health_only_server, lifespan, registry_server, serve_aiohttp

OPENAI_KEY = "sk-test-" + uuid.uuid4().hex
ANTHROPIC_KEY = "sk-ant-test-" + uuid.uuid4().hex
# Per provider (providers file): `slowsim` gives up on a non-streamed answer after 1 s, `patient` waits
# for one as long as it takes though nothing arrives within its read timeout.
SLOW_TOTAL_S = 1.0
PATIENT_READ_S = 0.2
SLOW_TOKENS_PER_S = 10.0


@dataclass
class Fleet:
    """Everything a gateway of this tier talks to, and the settings that point it there."""

    workdir: Path
    redis_url: str
    redis_prefix: str
    auth_addr: str
    registry_addr: str
    classifier_addr: str
    sim_url: str
    slow_url: str
    openai_url: str
    anthropic_url: str
    providers_file: Path
    models_file: Path
    keys: dict[str, str] = field(default_factory=dict)

    def settings(self, **overrides: Any) -> GatewaySettings:
        """Gateway settings as `make dev` runs it, on this fleet; `overrides` win."""
        values: dict[str, Any] = {
            "auth_addr": self.auth_addr,
            "registry_addr": self.registry_addr,
            "classifier_addr": self.classifier_addr,
            "redis_url": self.redis_url,
            "redis_prefix": self.redis_prefix,
            "providers_file": str(self.providers_file),
            "metrics_port": 0,
            "max_body_bytes": 65536,
            "upstream_read_timeout_s": 10,
            "upstream_first_token_timeout_s": 10,
            "upstream_total_timeout_s": 20,
            "usage_flush_interval_s": 0.2,
            "trusted_networks": "127.0.0.0/8,::1/128",
            "docs_enabled": True,
            "job_workers": 1,
            "batch_concurrency": 1,
            **overrides,
        }
        return GatewaySettings(**values)

    async def create_key(self, name: str, *, admin: bool = False, allowed_models: list[str] | None = None) -> str:
        """A new API key from the auth service (its secret)."""
        async with grpc.aio.insecure_channel(self.auth_addr) as channel:
            reply = await auth_pb2_grpc.AuthServiceStub(channel).CreateKey(
                auth_pb2.CreateKeyRequest(name=name, admin=admin, allowed_models=allowed_models or []), timeout=10
            )
        return str(reply.key)


@dataclass
class Gateway:
    """A started gateway app and a client of it (no key: each test says which it sends)."""

    app: ASGIApp
    client: httpx.AsyncClient

    def metrics(self) -> str:
        """The app's Prometheus text, as its metrics port serves it."""
        assert isinstance(self.app, RequestContextMiddleware)
        return generate_latest(self.app.metrics.registry).decode()

    def authorized(self, key: str, client_ip: str = "127.0.0.1") -> httpx.AsyncClient:
        """A client of the same app sending `key` as a bearer token, from `client_ip` (loopback: inside
        the trusted networks)."""
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app, client=(client_ip, 123)),
            base_url="http://127.0.0.1",
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )


@contextlib.asynccontextmanager
async def running_gateway(settings: GatewaySettings) -> AsyncIterator[Gateway]:
    """`create_asgi(settings)` with its lifespan run, and a client of it."""
    app = create_asgi(settings)
    async with lifespan(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", timeout=30) as client:
            yield Gateway(app, client)


@contextlib.contextmanager
def logged_lines() -> Iterator[io.StringIO]:
    """The lines the gateway logs meanwhile (the root logger's, in its format), in a buffer as well."""
    root = logging.getLogger()
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(root.handlers[0].formatter)
    root.addHandler(handler)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)


def local_models(sim_url: str, slow_url: str) -> list[dict[str, Any]]:
    """The local models of `make_stack`: served, slow, down, not served by their backend, pending."""
    dead = f"http://127.0.0.1:{free_port()}"
    return [
        inference_model(SERVED, sim_url, cost=SERVED_PRICE),
        inference_model("slow", slow_url, cost=SLOW_PRICE),
        inference_model("dead", dead),
        inference_model("dead-with-fallback", dead, fallbacks=[f"local/{SERVED}"]),
        inference_model("ghost", sim_url),  # the simulated backend does not serve "ghost"
        inference_model("pending", None, phase="Pending"),
        inference_model(EMBEDDER, sim_url),
    ]


def providers(openai_url: str, anthropic_url: str, slow_url: str, key_dir: Path) -> dict[str, Any]:
    """External providers: the OpenAI and Anthropic fakes, the slow simulator behind two timeout
    settings, and one that is down."""
    (key_dir / "openai").write_text(OPENAI_KEY)
    (key_dir / "anthropic").write_text(ANTHROPIC_KEY + "\n")  # as a mounted Secret
    slow = {"base_url": f"{slow_url}/v1", "api_key_required": False, "retries": 0, "models": ["slow"]}
    return {
        "providers": {
            "openai": {
                "base_url": f"{openai_url}/v1",
                "api_key_file": str(key_dir / "openai"),
                "models": {
                    "gpt-4o-mini": {},
                    "text-embedding-3-small": {},
                    "gpt-500": {"fallbacks": ["openai/gpt-4o-mini"]},
                },
            },
            "anthropic": {
                "base_url": anthropic_url,
                "api_key_file": str(key_dir / "anthropic"),
                "models": ["claude-sonnet-4-5", "claude-overloaded", "claude-die"],
            },
            "slowsim": {**slow, "timeouts": {"total_s": SLOW_TOTAL_S}},
            "patient": {**slow, "timeouts": {"read_s": PATIENT_READ_S, "total_s": 60}},
            "broken": {
                "base_url": f"http://127.0.0.1:{free_port()}/v1",
                "api_key_required": False,
                "retries": 0,
                "models": {"down": {"fallbacks": ["openai/gpt-4o-mini"]}, "down-alone": {}},
            },
        }
    }


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def fleet(tmp_path_factory: pytest.TempPathFactory, database_url: str, redis_url: str) -> AsyncIterator[Fleet]:
    """auth, registry, a classifier stand-in, two simulated vLLMs and the API fakes, in this process."""
    work = tmp_path_factory.mktemp("gateway-tier")
    prefix = f"iir-gw-{uuid.uuid4().hex[:8]}:"  # this tier's keys and channels in the shared Redis
    models_file = work / "models.yaml"
    async with contextlib.AsyncExitStack() as stack:
        sim = SimSettings(port=0, models=SERVED, embedding_models=EMBEDDER)
        sim_url = await stack.enter_async_context(serve_aiohttp(create_sim(sim)))
        slow = SimSettings(port=0, models=f"{SERVED},slow", tokens_per_s=SLOW_TOKENS_PER_S)
        slow_url = await stack.enter_async_context(serve_aiohttp(create_sim(slow)))
        openai_url = await stack.enter_async_context(serve_aiohttp(openai_api.make_app(OPENAI_KEY)))
        anthropic_url = await stack.enter_async_context(serve_aiohttp(anthropic_api.make_app(ANTHROPIC_KEY)))
        write_models_file(models_file, local_models(sim_url, slow_url))
        providers_file = work / "providers.yaml"
        providers_file.write_text(yaml.safe_dump(providers(openai_url, anthropic_url, slow_url, work)))
        auth = await stack.enter_async_context(auth_server(database_url, redis_url, prefix, MASTER_KEY, STATIC_KEY))
        registry = await stack.enter_async_context(registry_server(models_file))
        classifier = await stack.enter_async_context(health_only_server("iir.v1.ClassifierService"))
        yield Fleet(
            workdir=work,
            redis_url=redis_url,
            redis_prefix=prefix,
            auth_addr=f"127.0.0.1:{auth.port}",
            registry_addr=f"127.0.0.1:{registry.port}",
            classifier_addr=f"127.0.0.1:{classifier.port}",
            sim_url=sim_url,
            slow_url=slow_url,
            openai_url=openai_url,
            anthropic_url=anthropic_url,
            providers_file=providers_file,
            models_file=models_file,
        )


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def gateway(fleet: Fleet) -> AsyncIterator[Gateway]:
    """The gateway with the fleet's default settings, shared by the tier."""
    async with running_gateway(fleet.settings()) as gw:
        yield gw


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def api_key(fleet: Fleet) -> str:
    return await fleet.create_key("gateway-tier")


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def http(gateway: Gateway, api_key: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the shared gateway with a plain API key."""
    async with gateway.authorized(api_key) as client:
        yield client


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def openai_client(gateway: Gateway, api_key: str) -> AsyncIterator[openai.AsyncOpenAI]:
    """The official OpenAI SDK, talking to the shared gateway in process."""
    async with openai_sdk(gateway, api_key) as client:
        yield client


@contextlib.asynccontextmanager
async def openai_sdk(gateway: Gateway, key: str) -> AsyncIterator[openai.AsyncOpenAI]:
    """The OpenAI SDK with `key`, over the gateway app (it speaks `httpx2`, not `httpx`)."""
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=gateway.app), timeout=30) as http_client:
        yield openai.AsyncOpenAI(base_url="http://127.0.0.1/v1", api_key=key, max_retries=0, http_client=http_client)


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def anthropic_client(gateway: Gateway, api_key: str) -> AsyncIterator[anthropic.AsyncAnthropic]:
    """The official Anthropic SDK, talking to the shared gateway in process."""
    async with anthropic_sdk(gateway, api_key) as client:
        yield client


@contextlib.asynccontextmanager
async def anthropic_sdk(gateway: Gateway, key: str) -> AsyncIterator[anthropic.AsyncAnthropic]:
    """The Anthropic SDK with `key`, over the gateway app (it speaks `httpx2`, not `httpx`)."""
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=gateway.app), timeout=30) as http_client:
        yield anthropic.AsyncAnthropic(base_url="http://127.0.0.1", api_key=key, max_retries=0, http_client=http_client)
