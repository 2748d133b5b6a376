"""The fleet benchmark's pieces: its workload generators are deterministic and sized as documented, and one
short run of two simulated replicas behind the `random` stand-in plays every request and reads the
replicas' counters."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from iir_dev.stack import REPO

sys.path.insert(0, str(REPO / "bench"))  # the benchmark's modules import each other as scripts do

import fleet_workloads as workloads
from fleet import summarize
from fleet_load import play
from fleet_replicas import FleetOptions, deltas, running_fleet
from fleet_targets import Choice, start_peer


def _fingerprint(work: workloads.Workload) -> list[tuple[float, str, int, str]]:
    return [(round(s.start_s, 6), s.user, len(s.turns), s.turns[-1].content.render()[:40]) for s in work.sessions]


@pytest.mark.parametrize("name", list(workloads.GENERATORS))
def test_generators_are_deterministic(name: str) -> None:
    first = workloads.generate(name, seed=3, rate=4.0, duration_s=20)
    again = workloads.generate(name, seed=3, rate=4.0, duration_s=20)
    other = workloads.generate(name, seed=4, rate=4.0, duration_s=20)
    assert first.sessions
    assert _fingerprint(first) == _fingerprint(again)
    assert _fingerprint(first) != _fingerprint(other)
    assert all(0 <= s.start_s < 20 for s in first.sessions)


def test_multi_turn_workloads_start_in_progress() -> None:
    """Sessions that would have arrived before the run join with their history, at their next turn."""
    work = workloads.generate("chat", seed=1, rate=5.0, duration_s=10, time_scale=2)
    joined = [s for s in work.sessions if s.history]
    assert joined and len(joined) < len(work.sessions)
    assert all(0 <= s.start_s and s.history < len(s.turns) for s in work.sessions)
    assert [s.start_s for s in work.sessions] == sorted(s.start_s for s in work.sessions)
    session = workloads.sample("chat", 1, 1)[0]
    first = workloads.turn_time_s(session.turns[0], 2)
    resumed = workloads.joined(session, -first - session.turns[1].think_s / 2, 2)
    assert resumed is not None and resumed.history == 1
    assert abs(resumed.start_s - session.turns[1].think_s / 2) < 1e-9
    assert workloads.joined(session, -1e6, 2) is None
    assert all(not s.history for s in workloads.generate("no_shared", 1, 5.0, 10, time_scale=2).sessions)


def test_workload_sizes() -> None:
    tenant = workloads.sample("multi_tenant", 1, 50)
    assert len({s.system for s in tenant}) <= 4
    assert all(s.system is not None and 4000 <= s.system.words <= 6000 for s in tenant)
    agent = workloads.sample("agentic", 1, 5)
    for s in agent:
        context = 3000 + sum(t.content.words + t.max_tokens for t in s.turns)
        assert 17_000 <= s.turns[0].content.words <= 23_000
        assert 40_000 <= context <= 66_000
        assert s.prompt_cache_key
    chat = workloads.sample("chat", 1, 20)
    assert all(3 <= len(s.turns) <= 8 for s in chat)
    text = workloads.Text("x", 123).render()
    assert len(text.split()) == 123 and text == workloads.Text("x", 123).render()


def test_words_are_one_token_each() -> None:
    tokenizer = REPO / ".cache" / "fleet-tokenizer" / "tokenizer.json"
    if not tokenizer.exists():
        pytest.skip("no fleet tokenizer: python -m iir_dev.fleet_tokenizer build")
    from tokenizers import Tokenizer

    encoded = Tokenizer.from_file(str(tokenizer)).encode(" " + " ".join(workloads.WORDS))
    assert len(encoded.ids) == len(workloads.WORDS)


async def test_two_replicas_behind_random(tmp_path: Path) -> None:
    """Chat sessions (some joining in progress) through the random stand-in to two fast replicas."""
    started = time.monotonic()
    work = workloads.generate("chat", seed=1, rate=4.0, duration_s=2, time_scale=0.05)
    assert any(s.history for s in work.sessions)
    options = FleetOptions(replicas=2, time_scale=0.05, ttft_ms=20, tokens_per_s=2000)
    with running_fleet(options, tmp_path) as fleet, start_peer(Choice("random", "random"), fleet, tmp_path) as peer:
        before: list[dict[str, float]] = []
        results = await play(peer.endpoint, work, 4, 30, lambda: before.extend(fleet.scrape()))
        fleet.reset(timeout_s=20)
        row = summarize(results, deltas(before, fleet.scrape()))
    joining = [r for r in results if r.joining]
    assert len(joining) == sum(1 for s in work.sessions if s.history)
    assert row["requests"] == len(results) - len(joining) > 3
    assert row["errors"] == 0, [r.error for r in results if r.error]
    assert row["ttft_p50_ms"] is not None and row["output_tokens_per_s"]
    assert row["load_spread"] is not None and row["load_spread"] >= 1
    for r in results:
        assert r.output_tokens == work.sessions[r.session].turns[r.turn].max_tokens
    assert time.monotonic() - started < 30
