from iir_gateway.picking.base import PickRequest
from iir_gateway.picking.plugins.max_score.plugin import MaxScorePicker
from iir_gateway.picking.state import EndpointState


def test_highest_total_wins_and_ties_rotate() -> None:
    a, b, c = EndpointState("a"), EndpointState("b"), EndpointState("c")
    picker = MaxScorePicker()
    assert picker.pick(PickRequest("m"), [a, b, c], [0.2, 0.9, 0.1]) is b
    tied = {picker.pick(PickRequest("m"), [a, b, c], [1.0, 1.0, 0.0]).url for _ in range(4)}
    assert tied == {"a", "b"}
