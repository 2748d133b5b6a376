from iir_gateway.picking.base import PickRequest
from iir_gateway.picking.plugins.lora_affinity.plugin import LoraAffinityScorer
from iir_gateway.picking.state import EndpointState


def test_running_adapter_first_then_a_free_slot_then_full() -> None:
    running = EndpointState("a", running_adapters=frozenset({"sql"}), max_loras=2)
    waiting = EndpointState("b", waiting_adapters=frozenset({"sql", "chat"}), max_loras=2)
    free = EndpointState("c", running_adapters=frozenset({"chat"}), max_loras=2)
    full = EndpointState("d", running_adapters=frozenset({"chat", "math"}), max_loras=2)
    unknown = EndpointState("e")  # no LoRA figures yet
    scores = LoraAffinityScorer().score(
        PickRequest("local/sql", adapter="sql"), [running, waiting, free, full, unknown]
    )
    assert scores == [1.0, 1.0, 0.5, 0.0, 0.0]


def test_no_opinion_on_a_base_model_request() -> None:
    e = EndpointState("a", running_adapters=frozenset({"sql"}), max_loras=2)
    assert LoraAffinityScorer().score(PickRequest("local/base"), [e, EndpointState("b")]) == [0.0, 0.0]
