from iir_gateway.picking.base import PickRequest
from iir_gateway.picking.plugins.low_load_filter.plugin import LowLoadFilter
from iir_gateway.picking.state import EndpointState


def test_keeps_endpoints_within_slack_of_the_least_loaded() -> None:
    a, b, c = EndpointState("a", outstanding=2), EndpointState("b", waiting=5, running=4), EndpointState("c")
    assert LowLoadFilter(slack=8).filter(PickRequest("m"), [a, b, c], 0.0) == [a, c]
    assert LowLoadFilter(slack=9).filter(PickRequest("m"), [a, b, c], 0.0) == [a, b, c]
    assert LowLoadFilter().filter(PickRequest("m"), [], 0.0) == []


def test_a_ratio_keeps_busy_fleets_within_proportion() -> None:
    from iir_gateway.picking.plugins.low_load_filter.plugin import LowLoadFilter
    from iir_gateway.picking.state import EndpointState

    endpoints = [
        EndpointState("a", outstanding=24),
        EndpointState("b", outstanding=40),
        EndpointState("c", outstanding=67),
    ]
    kept = LowLoadFilter(slack=16, ratio=1.5).filter(None, endpoints, 0.0)  # type: ignore[arg-type]
    assert [e.url for e in kept] == ["a", "b"]
