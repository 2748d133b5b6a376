"""What the registry pushes of its KV block index: changes merged per window, the whole index after each
snapshot (in bounded events), and the endpoints it follows as the catalogue changes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from iir.v1 import registry_pb2
from iir_gateway.picking.kv_index import KvIndex
from iir_registry.catalogue import Catalogue
from iir_registry.kv_events.index import BlockIndex
from iir_registry.kv_events.publisher import KvPublisher, snapshot_events
from iir_registry.kv_events.service import KvBlocks
from tests.fakes.kv_publisher import FakeEngine, stored
from tests.waiting import eventually

Event = registry_pb2.WatchEvent
Update = registry_pb2.KvBlockUpdate


def fields(u: Update) -> tuple[str, list[int], list[int], list[int], list[int], bool, bool]:
    return u.url, list(u.stored), list(u.removed), list(u.stored_cpu), list(u.removed_cpu), u.cleared, u.gone


async def test_changes_within_a_window_go_out_as_one_update_per_endpoint_last_change_winning() -> None:
    pushed: list[list[Update]] = []
    publisher = KvPublisher(pushed.append, interval_s=0.01, max_hashes=1000)
    index = BlockIndex(publisher)
    index.store("a", [1, 2, 3])
    index.remove("a", [2, 9])
    index.store("a", [9])
    index.store("a", [4], cpu=True)
    index.store("b", [5])
    index.clear("b")
    index.store("b", [6])
    assert pushed == []  # nothing before the window ends
    await eventually(lambda: pushed)
    assert len(pushed) == 1
    a, b = pushed[0]
    assert fields(a) == ("a", [1, 3, 9], [2], [4], [], True, False)  # `a` was new: cleared first
    assert fields(b) == ("b", [6], [], [], [], True, False)
    index.drop("b")
    index.drop("nobody")
    publisher.flush()
    assert [fields(u) for u in pushed[1]] == [("b", [], [], [], [], False, True)]


async def test_a_window_holding_max_hashes_is_pushed_at_once() -> None:
    pushed: list[list[Update]] = []
    index = BlockIndex(KvPublisher(pushed.append, interval_s=60, max_hashes=100))
    index.follow("a")
    index.store("a", list(range(100)))
    assert len(pushed) == 1 and len(pushed[0][0].stored) == 100  # at once, not 60 s later


async def test_the_snapshot_holds_the_whole_index_in_bounded_events() -> None:
    index = BlockIndex(KvPublisher(lambda _: None, interval_s=60, max_hashes=10**9))
    index.store("a", list(range(120)))
    index.store("a", list(range(1000, 1030)), cpu=True)
    index.store("b", [7])
    index.follow("c")  # followed, nothing held yet
    events = snapshot_events(index, chunk=50)
    assert all(e.type == Event.KV_BLOCKS for e in events)
    assert all(sum(len(u.stored) + len(u.stored_cpu) for u in e.kv) <= 50 for e in events)
    updates = [u for e in events for u in e.kv]
    assert [u.url for u in updates if u.cleared] == ["a", "b", "c"]
    gateway = KvIndex()
    for e in events:
        gateway.apply(e.kv)
    assert gateway.match_lengths(list(range(120)), ["a", "b", "c"]) == [120, 0, 0]
    assert gateway.match_lengths(list(range(1000, 1030)), ["a"], cpu=True) == [30]
    assert gateway.publishing("c") and not gateway.publishing("d")


async def test_a_watch_gets_the_kv_index_after_its_snapshot_and_again_after_falling_behind() -> None:
    catalogue = Catalogue(max_pending=3)
    kv = KvBlocks(catalogue, flush_interval_s=0.001)
    kv.index.store("http://a", [1, 2])
    kv.publisher.flush()
    stream = catalogue.watch()
    first, blocks = await anext(stream), await anext(stream)
    assert first.type == Event.SNAPSHOT
    assert blocks.type == Event.KV_BLOCKS and [fields(u) for u in blocks.kv] == [
        ("http://a", [1, 2], [], [], [], True, False)
    ]
    kv.index.store("http://a", [3])
    delta = await asyncio.wait_for(anext(stream), 1)
    assert [fields(u) for u in delta.kv] == [("http://a", [3], [], [], [], False, False)]
    for i in range(5):  # nobody reads meanwhile
        kv.index.store("http://a", [10 + i])
        kv.publisher.flush()
    again, blocks = await anext(stream), await anext(stream)
    assert again.type == Event.SNAPSHOT and blocks.type == Event.KV_BLOCKS
    assert set(blocks.kv[0].stored) == {1, 2, 3, 10, 11, 12, 13, 14} and blocks.kv[0].cleared
    assert isinstance(stream, AsyncGenerator)
    await stream.aclose()
    await kv.stop()


def model(name: str, *endpoints: registry_pb2.Endpoint) -> registry_pb2.Model:
    return registry_pb2.Model(name=name, provider="local", source="file", endpoints=endpoints)


async def test_ready_endpoints_that_publish_are_followed_and_forgotten_when_they_go() -> None:
    engine = FakeEngine()
    catalogue = Catalogue()
    pushed: list[Update] = []
    kv = KvBlocks(catalogue, flush_interval_s=0.001)
    kv.catalogue.publish_kv = pushed.extend  # type: ignore[method-assign,assignment]
    kv.start()
    try:
        url = "http://10.0.0.1:8000"
        ep = registry_pb2.Endpoint(
            url=url, ready=True, target="pod-a", kv_events=engine.pub_address, kv_events_replay=engine.replay_address
        )
        quiet = registry_pb2.Endpoint(url="http://10.0.0.2:8000", ready=True, target="pod-b")
        draining = registry_pb2.Endpoint(url="http://10.0.0.3:8000", draining=True, kv_events=engine.pub_address)
        catalogue.upsert(model("local/m", ep, quiet, draining))
        catalogue.upsert(model("local/m-adapter", ep))  # the same endpoint: one subscriber
        await eventually(lambda: list(kv.follower.followed) == [url])
        await engine.publish(stored([1, 2]))  # the replay at connection brings it even if live is early
        await eventually(lambda: kv.index.held(url)[0] == {1, 2})
        await eventually(lambda: any(u.url == url and list(u.stored) == [1, 2] for u in pushed))
        catalogue.delete("local/m")
        await asyncio.sleep(0)  # still listed by the adapter model
        assert list(kv.follower.followed) == [url]
        catalogue.upsert(model("local/m-adapter", registry_pb2.Endpoint(url=url, ready=False, target="pod-a")))
        await eventually(lambda: not kv.follower.followed)
        await eventually(lambda: any(u.url == url and u.gone for u in pushed))
        assert kv.index.urls() == []
    finally:
        await kv.stop()
        await engine.close()
