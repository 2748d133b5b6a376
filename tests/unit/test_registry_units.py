"""The registry's catalogue fan-out and the InferenceModel → Model mapping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from pathlib import Path

from iir.v1 import registry_pb2
from iir_registry.catalogue import Catalogue
from iir_registry.metrics_scraper import MetricsScraper, parse_vllm_metrics
from iir_registry.resource_mapping import model_from_resource
from iir_registry.sources.file_source import FileSource

Event = registry_pb2.WatchEvent


def model(name: str, phase: str = "Ready") -> registry_pb2.Model:
    return registry_pb2.Model(name=name, phase=phase, source="file")


async def test_watch_gets_snapshot_then_changes() -> None:
    cat = Catalogue()
    cat.upsert(model("local/a"))
    stream = cat.watch()
    snap = await anext(stream)
    assert snap.type == Event.SNAPSHOT and [m.name for m in snap.models] == ["local/a"]
    cat.upsert(model("local/a"))  # unchanged: no event
    cat.upsert(model("local/a", "Degraded"))
    cat.delete("local/a")
    cat.delete("local/a")  # already gone: no event
    events = [await asyncio.wait_for(anext(stream), 1) for _ in range(2)]
    assert [(e.type, e.model.phase) for e in events] == [(Event.UPSERT, "Degraded"), (Event.DELETE, "Degraded")]
    assert isinstance(stream, AsyncGenerator)
    await stream.aclose()
    assert not cat._watchers


def test_replace_source_only_touches_that_source() -> None:
    cat = Catalogue()
    cat.upsert(registry_pb2.Model(name="openai/gpt", source="config"))
    cat.replace_source("file", [model("local/a"), model("local/b")])
    cat.replace_source("file", [model("local/b")])
    assert [m.name for m in cat.models()] == ["local/b", "openai/gpt"]


def test_mapping_uses_served_name_status_and_routing_hints() -> None:
    m = model_from_resource(
        {
            "metadata": {"name": "llama", "namespace": "ml", "creationTimestamp": "2026-01-02T03:04:05Z"},
            "spec": {
                "servedName": "llama-3",
                "replicas": 2,
                "gpusPerReplica": 1,
                "routing": {"fallbacks": ["local/small"], "costTier": "high", "categories": ["code"]},
            },
            "status": {
                "phase": "Degraded",
                "readyReplicas": 1,
                "message": "1/2 ready",
                "endpoints": [
                    {"url": "http://10.0.0.1:8000", "ready": True},
                    {"url": "http://10.0.0.2:8000", "ready": False},
                ],
            },
        },
        "kubernetes",
    )
    assert (m.name, m.served_name, m.provider, m.phase) == ("local/llama-3", "llama-3", "local", "Degraded")
    assert [e.ready for e in m.endpoints] == [True, False] and m.created == 1767323045
    assert list(m.fallbacks) == ["local/small"] and m.cost_tier == "high" and m.replicas == 2


def test_file_source_keeps_last_good_file(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text("kind: InferenceModel\nmetadata: {name: a}\nstatus: {phase: Ready}\n")
    cat = Catalogue()
    source = FileSource(path, cat)
    source.load()
    assert [m.name for m in cat.models()] == ["local/a"]
    path.write_text("kind: [broken")
    source.load(force=True)
    assert [m.name for m in cat.models()] == ["local/a"]
    path.unlink()
    source.load()
    assert cat.models() == []


def test_file_source_waits_for_a_file_being_written(tmp_path: Path) -> None:
    import os
    import time

    path = tmp_path / "models.yaml"
    path.write_text("kind: InferenceModel\nmetadata: {name: a}\n")
    cat = Catalogue()
    source = FileSource(path, cat)
    source.load()
    path.write_text("")  # an editor truncated the file and is about to write it
    source.load()
    assert [m.name for m in cat.models()] == ["local/a"]
    old = time.time() - 1
    os.utime(path, (old, old))  # it stayed empty: that is what the file says now
    source.load()
    assert cat.models() == []


VLLM_METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="meta llama/8B"} 7.0
vllm:num_requests_running{engine="1",model_name="meta llama/8B"} 5.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="meta llama/8B"} 3.0
vllm:num_requests_waiting{engine="1",model_name="meta llama/8B"} 1.0 1732500000000
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="meta llama/8B"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="meta llama/8B"} 0.5
vllm:prompt_tokens_total{engine="0",model_name="meta llama/8B"} 1234.0
vllm:num_requests_waiting{engine="2"} NaN-ish
"""


def test_vllm_metrics_sum_engines_and_keep_the_fullest_kv_cache() -> None:
    m = parse_vllm_metrics("http://a", VLLM_METRICS)
    assert (m.url, m.waiting, m.running, m.kv_cache_usage) == ("http://a", 4.0, 12.0, 0.5)
    old = parse_vllm_metrics("http://b", "vllm:gpu_cache_usage_perc 0.75\nvllm:num_requests_waiting 2\n")
    assert (old.kv_cache_usage, old.waiting) == (0.75, 2.0)


async def test_scraper_pushes_the_load_of_ready_local_endpoints() -> None:
    from aiohttp import web

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=VLLM_METRICS, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        cat = Catalogue()
        endpoints = [
            registry_pb2.Endpoint(url=f"http://127.0.0.1:{port}", ready=True),
            registry_pb2.Endpoint(url="http://127.0.0.1:1", ready=True),  # refused: skipped
            registry_pb2.Endpoint(url="http://10.9.9.9", ready=False),
        ]
        cat.upsert(registry_pb2.Model(name="local/a", provider="local", endpoints=endpoints))
        stream = cat.watch()
        await anext(stream)
        task = asyncio.create_task(MetricsScraper(cat, interval_s=0.05).run())
        event = await asyncio.wait_for(anext(stream), 5)
        task.cancel()
        assert isinstance(stream, AsyncGenerator)
        await stream.aclose()
        assert event.type == Event.METRICS
        assert [(m.url, m.waiting) for m in event.metrics] == [(f"http://127.0.0.1:{port}", 4.0)]
    finally:
        await runner.cleanup()


def test_a_watcher_that_falls_behind_gets_a_fresh_snapshot_not_the_backlog() -> None:
    import asyncio

    from iir.v1 import registry_pb2
    from iir_registry.catalogue import Catalogue

    async def go() -> list[registry_pb2.WatchEvent]:
        catalogue = Catalogue(max_pending=3)
        stream = catalogue.watch()
        first = await anext(stream)  # subscribed: the first snapshot
        for i in range(10):  # nobody reads meanwhile
            catalogue.upsert(registry_pb2.Model(name=f"local/m{i}", source="file"))
        caught_up = await anext(stream)
        catalogue.upsert(registry_pb2.Model(name="local/later", source="file"))
        return [first, caught_up, await asyncio.wait_for(anext(stream), 1)]

    first, caught_up, later = asyncio.run(go())
    assert first.type == caught_up.type == registry_pb2.WatchEvent.SNAPSHOT
    assert len(caught_up.models) == 10  # the whole state, not a partial backlog
    assert later.type == registry_pb2.WatchEvent.UPSERT and later.model.name == "local/later"


def test_the_scraper_reads_what_real_vllm_exports() -> None:
    """vLLM 0.32's own /metrics text (recorded by `make test-vllm`), with load figures written in."""
    import re

    from tests.vllm.recording import RECORDINGS

    text = (RECORDINGS / "metrics.txt").read_text()
    for name, value in (
        ("num_requests_waiting", "4.0"),
        ("num_requests_running", "3.0"),
        ("kv_cache_usage_perc", "0.5"),
    ):
        text, n = re.subn(rf"^(vllm:{name}\{{[^}}]*\}}) \S+$", rf"\g<1> {value}", text, flags=re.M)
        assert n == 1, name
    got = parse_vllm_metrics("http://x", text)
    assert (got.waiting, got.running, got.kv_cache_usage) == (4.0, 3.0, 0.5)


def test_endpoint_slice_conditions_ready_draining_gone() -> None:
    from iir_registry.sources.kubernetes_source import slice_endpoints

    def ep(ip: str, **conditions: bool) -> dict[str, object]:
        return {"addresses": [ip], "conditions": conditions, "targetRef": {"name": f"pod-{ip[-1]}"}}

    slices = [
        {
            "ports": [{"name": "http", "port": 8000}],
            "endpoints": [
                ep("10.0.0.1", ready=True, serving=True, terminating=False),
                ep("10.0.0.2", ready=False, serving=True, terminating=True),  # stopping, finishing its requests
                ep("10.0.0.3", ready=False, serving=False, terminating=True),  # stopping, done
                ep("10.0.0.4", ready=False),  # not ready yet
                ep("10.0.0.5"),  # unknown: ready, as kube-proxy takes it
            ],
        }
    ]
    got = {e.url.split("//")[1].split(":")[0]: (e.ready, e.draining) for e in slice_endpoints(slices)}
    assert got == {
        "10.0.0.1": (True, False),
        "10.0.0.2": (False, True),
        "10.0.0.3": (False, False),
        "10.0.0.4": (False, False),
        "10.0.0.5": (True, False),
    }


async def test_demand_is_summed_over_gateways_and_expires_with_a_silent_one() -> None:
    from iir_registry.demand import DemandBook

    cat = Catalogue()
    book = DemandBook(cat, ttl_s=10)
    cat.upsert(model("local/m"))
    cat.upsert(model("local/n"))
    events = cat.watch()
    await anext(events)
    d = registry_pb2.ModelDemand
    book.report("gw-x", [d(model="local/made-up", held=10**6)], now=0)  # not a model: ignored
    assert book.totals() == {}
    book.report("gw-a", [d(model="local/m", held=2)], now=0)
    book.report("gw-b", [d(model="local/m", held=3), d(model="local/n", held=1)], now=1)
    book.report("gw-b", [d(model="local/m", held=3), d(model="local/n", held=1)], now=2)  # same: no event
    assert book.totals() == {"local/m": 5, "local/n": 1}
    book.expire(now=10.5)  # gw-a last spoke at 0
    assert book.totals() == {"local/m": 3, "local/n": 1}
    book.report("gw-b", [], now=11)  # holds nothing now
    assert book.totals() == {}
    got = [await asyncio.wait_for(anext(events), 1) for _ in range(4)]
    assert all(e.type == Event.DEMAND for e in got)
    assert [[(x.model, x.held) for x in e.demand] for e in got] == [
        [("local/m", 2)],
        [("local/m", 5), ("local/n", 1)],
        [("local/m", 3)],
        [("local/m", 0), ("local/n", 0)],
    ]
    assert isinstance(events, AsyncGenerator)
    await events.aclose()


def test_lora_metrics_take_the_latest_series_as_real_vllm_leaves_them() -> None:
    # As real vLLM 0.32 exported them with --enable-lora --max-loras 2, just after a request for `ad1`.
    text = """# HELP vllm:lora_requests_info Running stats on lora requests.
# TYPE vllm:lora_requests_info gauge
vllm:lora_requests_info{max_lora="2",running_lora_adapters="ad1",waiting_lora_adapters="ad1"} 1.7962223670118723e+09
vllm:lora_requests_info{max_lora="2",running_lora_adapters="",waiting_lora_adapters=""} 1.7962223670709236e+09
vllm:lora_requests_info{max_lora="2",running_lora_adapters="ad1,ad2",waiting_lora_adapters="ad3"} 1.7962223669e+09
"""
    m = parse_vllm_metrics("http://x", text)
    assert (list(m.running_adapters), list(m.waiting_adapters), m.max_loras) == ([], [], 2)
    later = (
        text
        + 'vllm:lora_requests_info{max_lora="2",running_lora_adapters="ad1,ad2",waiting_lora_adapters="ad3"} 1.8e+09\n'
    )
    m = parse_vllm_metrics("http://x", later)
    assert (list(m.running_adapters), list(m.waiting_adapters)) == (["ad1", "ad2"], ["ad3"])
    assert parse_vllm_metrics("http://x", "vllm:num_requests_running 1\n").max_loras == 0


def test_the_registry_lists_the_adapter_the_operator_loads_when_two_share_a_name() -> None:
    """Oldest first for both (`assign_names`): the registry once took the first by object name instead,
    and listed an adapter the operator had refused."""
    from iir_common.inference_adapter import assign_names
    from iir_registry.resource_mapping import adapter_models

    def adapter(name: str, created: str) -> dict[str, object]:
        return {
            "metadata": {"name": name, "creationTimestamp": created},
            "spec": {"baseModel": "base", "servedName": "sql", "source": {"path": "/a"}},
            "status": {"loadedOn": ["pod-0"]},
        }

    older, newer = adapter("zzz-first", "2026-01-01T00:00:00Z"), adapter("aaa-second", "2026-02-01T00:00:00Z")
    kept, refused = assign_names([newer, older], {"base"})
    assert [v.name for _, v in kept] == ["zzz-first"] and "taken by the adapter zzz-first" in refused["aaa-second"]
    base = registry_pb2.Model(
        name="local/base", served_name="base", endpoints=[registry_pb2.Endpoint(url="http://p0", target="pod-0")]
    )
    (listed,) = adapter_models(base, [newer, older])
    assert listed.name == "local/sql" and listed.created == 1767225600  # zzz-first's creation time


def test_endpoint_urls_bracket_ipv6_as_a_url_must() -> None:
    from iir_common.kube import endpoint_url

    assert endpoint_url("10.0.0.7", 8000) == "http://10.0.0.7:8000"
    assert endpoint_url("fd00::7", 8000) == "http://[fd00::7]:8000"  # the operator's status once wrote it bare
