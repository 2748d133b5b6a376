from iir_gateway.picking.base import PickRequest
from iir_gateway.picking.plugins.healthy_filter.plugin import HealthyFilter
from iir_gateway.picking.state import EndpointStates


def test_ejected_after_three_failures_then_probed_back_with_doubling_backoff() -> None:
    states = EndpointStates()
    a, b = states.get("http://a"), states.get("http://b")
    request = PickRequest("local/m")
    for _ in range(3):
        states.started("http://a")
        states.finished("http://a", ok=False, now=100.0)
    assert HealthyFilter().filter(request, [a, b], 100.0) == [b]
    assert a.ejected_until == 105.0
    # Time up: eligible again; one failed probe ejects it at once, for twice as long.
    assert HealthyFilter().filter(request, [a, b], 105.0) == [a, b]
    states.finished("http://a", ok=False, now=105.0)
    assert a.ejected_until == 115.0
    # A successful probe clears the record.
    states.finished("http://a", ok=True, now=115.0)
    assert (a.failures, a.ejections) == (0, 0)


def test_backoff_is_capped() -> None:
    states = EndpointStates(base_ejection_s=5, max_ejection_s=12)
    for _ in range(10):
        states.finished("http://a", ok=False, now=0.0)
    assert states.get("http://a").ejected_until == 12.0
