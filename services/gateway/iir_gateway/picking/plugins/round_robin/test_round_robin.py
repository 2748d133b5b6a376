from iir_gateway.picking.base import PickRequest
from iir_gateway.picking.plugins.round_robin.plugin import RoundRobinPicker
from iir_gateway.picking.state import EndpointState


def test_each_endpoint_in_turn_per_model() -> None:
    endpoints = [EndpointState("a"), EndpointState("b"), EndpointState("c")]
    picker = RoundRobinPicker()
    picked = [picker.pick(PickRequest("m1"), endpoints, [0, 0, 0]).url for _ in range(4)]
    assert picked == ["a", "b", "c", "a"]
    assert picker.pick(PickRequest("m2"), endpoints, [0, 0, 0]).url == "a"
