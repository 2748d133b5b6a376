from iir_gateway.picking.base import PickRequest, PluginContext
from iir_gateway.picking.plugins.prefix_affinity.plugin import PrefixAffinityScorer
from iir_gateway.picking.prefix import prefix_blocks
from iir_gateway.picking.state import EndpointStates

SYSTEM = {"role": "system", "content": "You are a careful assistant. " * 40}


def test_blocks_are_chained_so_a_shared_prefix_shares_leading_hashes() -> None:
    one = prefix_blocks({"messages": [SYSTEM, {"role": "user", "content": "a" * 300}]})
    two = prefix_blocks({"messages": [SYSTEM, {"role": "user", "content": "b" * 300}]})
    shared = len(SYSTEM["content"]) // 128
    assert one[:shared] == two[:shared] and one[-1] != two[-1]
    assert prefix_blocks({"prompt": "x" * 100}) == []  # no whole block
    assert len(prefix_blocks({"prompt": "x" * 1_000_000})) == 128  # bounded work


def test_scores_the_matched_share_of_leading_blocks() -> None:
    states = EndpointStates()
    scorer = PrefixAffinityScorer(PluginContext(states))
    a, b = states.get("a"), states.get("b")
    scorer.picked(PickRequest("m", [1, 2, 3, 4]), a)
    assert scorer.score(PickRequest("m", [1, 2, 9, 10]), [a, b]) == [0.5, 0.0]
    assert scorer.score(PickRequest("m", [9, 2, 3, 4]), [a, b]) == [0.0, 0.0]  # leading blocks only
    assert scorer.score(PickRequest("m", []), [a, b]) == [0.0, 0.0]


def test_a_session_sticks_to_its_replica() -> None:
    states = EndpointStates()
    scorer = PrefixAffinityScorer(PluginContext(states))
    a, b = states.get("a"), states.get("b")
    scorer.picked(PickRequest("m", [], session="s1"), b)
    assert scorer.score(PickRequest("m", [], session="s1"), [a, b]) == [0.0, 1.0]


def test_block_memory_is_bounded_lru() -> None:
    states = EndpointStates(prefix_capacity=3)
    states.remember_prefixes("a", [1, 2, 3])
    states.remember_prefixes("a", [1, 4])
    assert list(states.get("a").prefixes) == [3, 1, 4]
