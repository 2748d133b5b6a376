"""Endpoint picking as the local provider runs it: policies, ejection, saturation queue."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
import pytest
from prometheus_client import CollectorRegistry

from iir.v1 import registry_pb2
from iir_gateway.errors import APIError
from iir_gateway.picking.base import PickRequest
from iir_gateway.picking.collector import EndpointStateCollector
from iir_gateway.picking.policies import POLICIES, Scheduler
from iir_gateway.picking.queue import PriorityGate, Saturated
from iir_gateway.picking.registry import build
from iir_gateway.picking.state import EndpointStates
from iir_gateway.providers.base import RouteRequest
from iir_gateway.providers.config import ProviderConfig
from iir_gateway.providers.external import ExternalProvider
from iir_gateway.providers.local.catalogue import ModelCatalogue
from iir_gateway.providers.local.provider import LocalProvider

URLS = ["http://a", "http://b", "http://c"]


def test_every_named_policy_builds_and_picks_a_given_endpoint() -> None:
    for name in POLICIES:
        assert Scheduler(name, EndpointStates()).pick(PickRequest("m", [1, 2]), URLS) in URLS
    with pytest.raises(ValueError, match="unknown endpoint picking policy 'nope'; known: least_outstanding"):
        Scheduler("nope", EndpointStates())
    with pytest.raises(ValueError, match="unknown picking plugin"):
        build("nope", None)  # type: ignore[arg-type]


def test_prefix_policy_keeps_a_conversation_on_one_replica_until_it_is_overloaded() -> None:
    states = EndpointStates()
    scheduler = Scheduler("load_aware_prefix", states)
    first = scheduler.pick(PickRequest("m", [1, 2, 3]), URLS)
    states.started(first)
    # Same prefix, a little busier than the others: affinity wins.
    assert scheduler.pick(PickRequest("m", [1, 2, 3, 4]), URLS) == first
    # Over the low-load slack (8 more than the least loaded): the prefix goes elsewhere.
    states.update_metrics(first, waiting=20, running=10, kv_cache_usage=0.5)
    assert scheduler.pick(PickRequest("m", [1, 2, 3, 4]), URLS) != first


def test_load_aware_prefers_the_replica_reporting_least_work() -> None:
    states = EndpointStates()
    states.update_metrics("http://a", waiting=5, running=30, kv_cache_usage=0.9)
    states.update_metrics("http://b", waiting=0, running=3, kv_cache_usage=0.2)
    states.update_metrics("http://c", waiting=1, running=20, kv_cache_usage=0.7)
    assert Scheduler("load_aware", states).pick(PickRequest("m"), URLS) == "http://b"


def test_ejected_replica_is_skipped_unless_all_are() -> None:
    states = EndpointStates()
    scheduler = Scheduler("round_robin", states)
    for _ in range(3):
        states.finished("http://b", ok=False, now=0.0)
    assert {scheduler.pick(PickRequest("m"), URLS, now=1.0) for _ in range(6)} == {"http://a", "http://c"}
    for url in ("http://a", "http://c"):
        for _ in range(3):
            states.finished(url, ok=False, now=0.0)
    assert scheduler.pick(PickRequest("m"), URLS, now=1.0) in URLS  # all ejected: still served


async def test_queue_serves_highest_priority_first_and_is_bounded() -> None:
    gate = PriorityGate(max_waiting=2, timeout_s=5)
    order: list[str] = []

    async def waiter(name: str, priority: int) -> None:
        await gate.wait("m", priority)
        order.append(name)

    low = asyncio.create_task(waiter("low", 0))
    await asyncio.sleep(0)
    high = asyncio.create_task(waiter("high", 9))
    await asyncio.sleep(0)
    with pytest.raises(Saturated) as full:
        await gate.wait("m", 5)
    assert full.value.retry_after_s == 1 and "2 requests are already waiting" in str(full.value)
    gate.wake("m")
    await high
    gate.wake("m")
    await low
    assert order == ["high", "low"] and gate.waiting == 0


async def test_queue_wait_times_out() -> None:
    gate = PriorityGate(max_waiting=10, timeout_s=0.05)
    with pytest.raises(Saturated, match="no room came within"):
        await gate.wait("m", 0)
    assert gate.waiting == 0
    gate.wake("m")  # the abandoned entry is skipped


def catalogue_with(urls: list[str]) -> ModelCatalogue:
    catalogue = ModelCatalogue(grpc.aio.insecure_channel("127.0.0.1:1"))
    model = registry_pb2.Model(
        name="local/m",
        served_name="served-m",
        phase="Ready",
        endpoints=[registry_pb2.Endpoint(url=u, ready=True, target=f"pod-{i}") for i, u in enumerate(urls)],
    )
    catalogue.apply(registry_pb2.WatchEvent(type=registry_pb2.WatchEvent.SNAPSHOT, models=[model]))
    return catalogue


async def test_saturated_model_queues_then_proceeds_when_a_request_ends() -> None:
    states = EndpointStates()
    provider = LocalProvider(
        catalogue_with(["http://a"]),
        Scheduler("load_aware_prefix", states),
        states,
        PriorityGate(max_waiting=1, timeout_s=5),
        max_outstanding=1,
    )
    first = await provider.resolve("m", RouteRequest({}))
    assert (first.base_url, first.model, first.target, first.public_model) == (
        "http://a/v1",
        "served-m",
        "pod-0",
        "local/m",
    )
    queued = asyncio.create_task(provider.resolve("m", RouteRequest({}, priority=1)))
    await asyncio.sleep(0.01)
    assert not queued.done()
    with pytest.raises(APIError) as refused:
        await provider.resolve("m", RouteRequest({}))
    assert refused.value.status == 429 and refused.value.code == "model_saturated"
    provider.release(first, ok=True)
    second = await asyncio.wait_for(queued, 1)
    assert second.endpoint == "http://a" and states.get("http://a").outstanding == 1


async def test_vllm_reported_queue_also_saturates() -> None:
    states = EndpointStates()
    provider = LocalProvider(
        catalogue_with(["http://a", "http://b"]),
        Scheduler("least_outstanding", states),
        states,
        PriorityGate(max_waiting=0),
        max_waiting=10,
    )
    states.update_metrics("http://a", waiting=10, running=0, kv_cache_usage=0)
    assert (await provider.resolve("m", RouteRequest({}))).endpoint == "http://b"
    states.update_metrics("http://b", waiting=12, running=0, kv_cache_usage=0)
    with pytest.raises(APIError, match="saturated"):
        await provider.resolve("m", RouteRequest({}))


async def test_fresh_metrics_wake_requests_queued_behind_other_gateways_traffic() -> None:
    states = EndpointStates()
    gate = PriorityGate(max_waiting=5, timeout_s=5)
    provider = LocalProvider(
        catalogue_with(["http://a"]), Scheduler("load_aware", states), states, gate, max_waiting=10
    )
    states.update_metrics("http://a", waiting=50, running=64, kv_cache_usage=1.0)
    queued = asyncio.create_task(provider.resolve("m", RouteRequest({})))
    await asyncio.sleep(0.01)
    gate.wake_all()  # still saturated: it waits again, within its first deadline
    await asyncio.sleep(0.01)
    assert not queued.done()
    states.update_metrics("http://a", waiting=2, running=64, kv_cache_usage=0.9)
    gate.wake_all()
    assert (await asyncio.wait_for(queued, 1)).endpoint == "http://a"


def _model(name: str, urls: list[str]) -> registry_pb2.Model:
    endpoints = [registry_pb2.Endpoint(url=u, ready=True) for u in urls]
    return registry_pb2.Model(name=name, served_name=name, phase="Ready", endpoints=endpoints)


def _scrape(*loads: tuple[str, float]) -> registry_pb2.WatchEvent:
    metrics = [registry_pb2.EndpointMetrics(url=url, waiting=waiting) for url, waiting in loads]
    return registry_pb2.WatchEvent(type=registry_pb2.WatchEvent.METRICS, metrics=metrics)


def _series(registry: CollectorRegistry) -> set[str]:
    """The `endpoint` label of every series the endpoint collector exports."""
    return {s.labels["endpoint"] for family in registry.collect() for s in family.samples}


async def test_a_replica_that_leaves_the_catalogue_loses_its_state_and_its_series() -> None:
    Event = registry_pb2.WatchEvent
    states = EndpointStates()

    def on_metrics(metrics: Sequence[registry_pb2.EndpointMetrics]) -> None:  # as the runtime wires it
        for m in metrics:
            states.update_metrics(m.url, m.waiting, m.running, m.kv_cache_usage)

    catalogue = ModelCatalogue(grpc.aio.insecure_channel("127.0.0.1:1"), on_metrics=on_metrics)
    provider = LocalProvider(catalogue, Scheduler("load_aware_prefix", states), states, PriorityGate())
    registry = CollectorRegistry()
    registry.register(EndpointStateCollector(states))
    config = ProviderConfig(base_url="https://api.example/v1", api_key_required=False)
    circuit = (await ExternalProvider("openai", config, states).resolve("gpt-x", RouteRequest({}))).endpoint

    catalogue.apply(Event(type=Event.SNAPSHOT, models=[_model("local/m", ["http://a", "http://b", "http://c"])]))
    catalogue.apply(Event(type=Event.UPSERT, model=_model("local/adapter", ["http://c"])))  # a LoRA on one replica
    catalogue.apply(_scrape(("http://a", 1), ("http://b", 1), ("http://c", 500)))
    for url in ("http://a", "http://b", "http://c"):
        states.remember_prefixes(url, list(range(1000)))
    in_flight = await provider.resolve("m", RouteRequest({}))  # on a or b: c is saturated
    assert _series(registry) == {"http://a", "http://b", "http://c", circuit}

    catalogue.apply(Event(type=Event.UPSERT, model=_model("local/m", ["http://c", in_flight.endpoint])))
    kept = {"http://c", in_flight.endpoint}
    assert {s.url for s in states.all()} == kept | {circuit}  # an external provider's circuit is no replica
    assert _series(registry) == kept | {circuit}

    catalogue.apply(Event(type=Event.DELETE, model=_model("local/m", [])))
    catalogue.apply(_scrape(("http://a", 1), ("http://b", 1)))  # a scrape that was on its way
    provider.release(in_flight, ok=False)  # and a request that outlived its replica
    assert {s.url for s in states.all()} == {"http://c", circuit}  # the adapter still has c
    catalogue.apply(Event(type=Event.SNAPSHOT, models=[]))
    assert {s.url for s in states.all()} == {circuit}
    assert _series(registry) == {circuit}


async def test_made_up_external_model_names_leave_no_state_behind() -> None:
    """Any name a client sends gets a circuit while it runs; an idle, healthy one of an unconfigured model is
    dropped, so made-up names cannot grow the states and their series; a failing one is kept (its circuit)."""
    states = EndpointStates(failure_threshold=1)
    config = ProviderConfig(base_url="https://api.example/v1", api_key_required=False)
    provider = ExternalProvider("openai", config, states)
    for i in range(50):
        upstream = await provider.resolve(f"made-up-{i}", RouteRequest({}))
        provider.release(upstream, ok=None if i % 2 else True)
    assert states.all() == []

    failing = await provider.resolve("made-up-failing", RouteRequest({}))
    provider.release(failing, ok=False)
    assert [s.url for s in states.all()] == [failing.endpoint]
    with pytest.raises(APIError) as refused:
        await provider.resolve("made-up-failing", RouteRequest({}))
    assert refused.value.status == 503
