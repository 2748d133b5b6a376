from __future__ import annotations

from collections.abc import Sequence

from iir_gateway.picking.base import PickRequest, PluginContext
from iir_gateway.picking.plugins.predicted_ttft.plugin import PredictedTtftScorer
from iir_gateway.picking.state import EndpointStates


class Index:
    """Replica URL → the block hashes it holds."""

    def __init__(self, held: dict[str, set[int]]) -> None:
        self.held = held

    def publishing(self, url: str) -> bool:
        return url in self.held

    def match_lengths(self, hashes: Sequence[int], urls: Sequence[str]) -> list[int]:
        out = []
        for url in urls:
            n = 0
            while n < len(hashes) and hashes[n] in self.held.get(url, set()):
                n += 1
            out.append(n)
        return out


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def scorer(held: dict[str, set[int]], clock: Clock | None = None) -> tuple[PredictedTtftScorer, EndpointStates]:
    states = EndpointStates()
    context = PluginContext(states, Index(held), prefill_tokens_per_s=1000.0)
    return PredictedTtftScorer(context, clock=clock or Clock()), states


def request(tokens: int, blocks: int, session: str = "") -> PickRequest:
    return PickRequest("m", session=session, prompt_tokens=tokens, kv_blocks=list(range(blocks)), block_size=16)


def test_the_replica_holding_the_prefix_costs_only_its_uncached_prefill() -> None:
    s, states = scorer({"a": set(range(60)), "b": set()})
    a, b = states.get("a"), states.get("b")
    scores = s.score(request(1024, 64), [a, b])
    # a: 1024 − 60·16 = 64 uncached tokens; b: all 1024
    assert scores == [1.0, (64 + 1) / (1024 + 1)]


def test_affinity_yields_to_a_replica_whose_queue_costs_more_than_the_prefill_it_saves() -> None:
    clock = Clock()
    s, states = scorer({"a": set(range(64)), "b": set()}, clock)
    a, b = states.get("a"), states.get("b")
    for _ in range(3):  # three long prompts queued on a: 3 × 4096 tokens of prefill waiting there
        s.picked(request(4096, 0), a)
        s._uncached = {}
    scores = s.score(request(1024, 64), [a, b])
    assert scores[1] > scores[0]
    clock.now += 60  # the backlog drains at the prefill speed: affinity wins again
    assert s.score(request(1024, 64), [a, b])[0] == 1.0


def test_other_gateways_queues_count_through_vllms_waiting_gauge() -> None:
    s, states = scorer({"a": set(range(64)), "b": set()})
    a, b = states.get("a"), states.get("b")
    s.mean_uncached = 2000.0
    states.update_metrics("a", waiting=4, running=0, kv_cache_usage=0.1)
    scores = s.score(request(1024, 64), [a, b])
    assert scores[1] > scores[0]


def test_replicas_without_events_use_the_estimate_and_the_session() -> None:
    s, states = scorer({})
    a, b = states.get("a"), states.get("b")
    s.picked(PickRequest("m", session="k:s1", prompt_tokens=900), b)
    b.backlog_tokens = 0.0
    scores = s.score(PickRequest("m", session="k:s1", prompt_tokens=1000), [a, b])
    assert scores[1] == 1.0 and scores[0] < 0.2
    states.remember_prefixes("a", [7, 8])
    scores = s.score(PickRequest("m", [7, 8], prompt_tokens=1000), [a, b])
    assert scores[0] == 1.0


def test_blocks_sent_count_as_held_until_the_events_can_say_so() -> None:
    clock = Clock()
    s, states = scorer({"a": set(), "b": set()}, clock)
    a, b = states.get("a"), states.get("b")
    first = request(4096, 256)
    s.score(first, [a, b])
    s.picked(first, a)  # a computes the prompt; its events come once it is stored
    a.backlog_tokens = 0.0
    scores = s.score(request(4096, 256), [a, b])
    assert scores[0] == 1.0 and scores[1] < 0.1  # the next request sharing it queues there, a hit
    clock.now += 31  # the events never said so: a guess no longer
    scores = s.score(request(4096, 256), [a, b])
    assert scores[1] == 1.0 and scores[0] > 0.95  # (a still has the arrival of the first, nearly forgotten)


def test_a_long_miss_goes_where_it_delays_fewer_requests() -> None:
    clock = Clock()
    s, states = scorer({"a": set(range(8)), "b": set()}, clock)
    a, b = states.get("a"), states.get("b")
    for _ in range(20):  # a popular prefix keeps a busy: 2 requests a second
        hit = request(128, 8)
        s.score(hit, [a, b])
        s.picked(hit, a)
        clock.now += 0.5
    a.backlog_tokens = b.backlog_tokens = 0.0
    scores = s.score(request(8192, 0), [a, b])  # a new 8k-token prompt: a miss on both
    assert scores[1] == 1.0 and scores[0] < 0.8
