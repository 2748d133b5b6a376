import pytest

from iir_gateway.picking.base import PickRequest
from iir_gateway.picking.plugins.load_aware.plugin import LoadAwareScorer
from iir_gateway.picking.state import EndpointState


def test_queue_and_kv_cache_both_count() -> None:
    busy = EndpointState("busy", waiting=10, running=20, kv_cache_usage=0.9)
    idle = EndpointState("idle", waiting=0, running=2, kv_cache_usage=0.1)
    scores = LoadAwareScorer().score(PickRequest("m"), [busy, idle])
    assert scores == pytest.approx([0.5 * 0 + 0.5 * 0.1, 0.5 * 1 + 0.5 * 0.9])


def test_own_in_flight_count_overrides_a_stale_scrape() -> None:
    stale = EndpointState("stale", outstanding=30, waiting=0, running=0)
    other = EndpointState("other", waiting=1, running=4)
    assert stale.load == 30
    first, second = LoadAwareScorer(queue_weight=1.0).score(PickRequest("m"), [stale, other])
    assert first < second


def test_kv_usage_out_of_range_is_clamped() -> None:
    e = EndpointState("e", kv_cache_usage=1.7)
    assert LoadAwareScorer(queue_weight=0.0).score(PickRequest("m"), [e]) == [0.0]
