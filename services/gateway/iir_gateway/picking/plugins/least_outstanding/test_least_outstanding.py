from iir_gateway.picking.base import PickRequest
from iir_gateway.picking.plugins.least_outstanding.plugin import LeastOutstandingScorer, normalized_inverse
from iir_gateway.picking.state import EndpointState


def test_normalized_inverse() -> None:
    assert normalized_inverse([2, 4, 6]) == [1.0, 0.5, 0.0]
    assert normalized_inverse([3, 3]) == [1.0, 1.0]


def test_fewest_in_flight_scores_highest() -> None:
    endpoints = [EndpointState("a", outstanding=5), EndpointState("b", outstanding=1)]
    assert LeastOutstandingScorer().score(PickRequest("m"), endpoints) == [0.0, 1.0]
