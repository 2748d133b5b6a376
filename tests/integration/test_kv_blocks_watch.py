"""The KV block index end to end: an engine's KV events (a real ZeroMQ publisher speaking vLLM's protocol)
→ the registry (its file source naming the endpoint's sockets, subscriber, index) → the Watch stream over
real gRPC → each gateway's KvIndex, fed by its catalogue: live changes, the whole index for a gateway that
connects later, and nothing left of an endpoint once it goes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from iir.v1 import registry_pb2_grpc
from iir_common.grpc_server import GrpcService
from iir_gateway.picking.kv_index import KvIndex
from iir_gateway.providers.local.catalogue import ModelCatalogue
from iir_registry.catalogue import Catalogue
from iir_registry.grpc_api import RegistryServicer
from iir_registry.kv_events.service import KvBlocks
from iir_registry.sources.file_source import FileSource
from tests.fakes.kv_publisher import FakeEngine, removed, stored
from tests.waiting import eventually

URL = "http://127.0.0.1:8100"


def models_file(path: Path, engine: FakeEngine | None) -> None:
    endpoint: dict[str, Any] = {"url": URL, "ready": True, "target": "sim-0"}
    if engine is not None:
        endpoint |= {"kvEvents": engine.pub_address, "kvEventsReplay": engine.replay_address}
    doc = {
        "apiVersion": "iir.dev/v1alpha1",
        "kind": "InferenceModel",
        "metadata": {"name": "llama", "namespace": "default"},
        "spec": {
            "source": {"huggingFace": {"id": "meta-llama/Llama-3.1-8B-Instruct"}},
            "tokenizer": "/tokenizers/llama",
            "routing": {"hashSeed": "42"},
        },
        "status": {"phase": "Ready", "readyReplicas": 1, "endpoints": [endpoint]},
    }
    path.write_text(yaml.safe_dump(doc))


class Registry:
    def __init__(self, path: Path) -> None:
        self.catalogue = Catalogue()
        self.kv = KvBlocks(self.catalogue, flush_interval_s=0.005)
        self.source = FileSource(path, self.catalogue, poll_s=0.05)
        servicer = RegistryServicer(self.catalogue, self.source)
        self.service = GrpcService(
            [lambda s: registry_pb2_grpc.add_RegistryServiceServicer_to_server(servicer, s)],
            ["iir.v1.RegistryService"],
            0,
        )


@pytest.fixture
async def engine() -> AsyncIterator[FakeEngine]:
    e = FakeEngine()
    yield e
    await e.close()


@pytest.fixture
async def registry(tmp_path: Path, engine: FakeEngine) -> AsyncIterator[Registry]:
    models_file(tmp_path / "models.yaml", engine)
    reg = Registry(tmp_path / "models.yaml")
    reg.kv.start()
    reg.source.start()
    await reg.service.start()
    yield reg
    await reg.service.stop(0)
    await reg.source.stop()
    await reg.kv.stop()


async def gateway(port: int) -> AsyncGenerator[tuple[ModelCatalogue, KvIndex], None]:
    index = KvIndex()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        catalogue = ModelCatalogue(channel, kv_index=index)
        task = asyncio.create_task(catalogue.run())
        try:
            yield catalogue, index
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_gateways_hold_the_blocks_each_replica_reports(
    registry: Registry, engine: FakeEngine, tmp_path: Path
) -> None:
    first = gateway(registry.service.port)
    catalogue, index = await anext(first)
    try:
        await eventually(lambda: index.publishing(URL))
        model = catalogue.get("local/llama")
        assert model is not None and model.endpoints[0].kv_events == engine.pub_address
        kv = model.kv_cache
        assert (kv.tokenizer, kv.block_size, kv.hash_algo, kv.hash_seed) == (
            "/tokenizers/llama",
            16,
            "sha256_cbor",
            "42",
        )

        prompt = [11, 12, 13, 14]
        await engine.publish(stored(prompt[:3]))  # the replay at connection brings it if live was too early

        await eventually(lambda: index.match_lengths(prompt, [URL]) == [3])
        await engine.publish(removed([12]))
        await eventually(lambda: index.match_lengths(prompt, [URL]) == [1])

        later = gateway(registry.service.port)  # connects now: gets the whole index after its snapshot
        _, late_index = await anext(later)
        try:
            await eventually(lambda: late_index.match_lengths(prompt, [URL]) == [1])
            await engine.publish(stored([12, 14]))
            await eventually(lambda: [ix.match_lengths(prompt, [URL]) for ix in (index, late_index)] == [[4], [4]])
        finally:
            await later.aclose()

        models_file(tmp_path / "models.yaml", None)  # the endpoint no longer publishes: forgotten
        await eventually(lambda: not index.publishing(URL), timeout=5)
        assert index.match_lengths(prompt, [URL]) == [0] and len(index) == 0
    finally:
        await first.aclose()
