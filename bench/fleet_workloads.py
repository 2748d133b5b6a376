"""The fleet benchmark's workloads: seeded generators of sessions, each a sequence of chat turns.

Text is drawn from `fleet_words.txt`, words that SmolLM2's tokenizer (the fleet's) encodes as one token each
after a space, so a part of N words is N tokens. A session starts at its arrival time; each later turn is
sent a think time after the previous answer ended, with the history so far (the answers as they came).
Sessions carry what the OpenAI SDK sends for them (`user`, `prompt_cache_key`), the same to every target.

- `multi_tenant`: a few tenants' long system prompts (4-6k tokens, popularity 1/rank), short questions.
- `chat`: multi-turn chats (3-8 turns, 20-150 tokens each) under one short system prompt, the history
  growing each turn.
- `agentic`: coding-agent sessions: a shared agent prompt (3k tokens) and a 17-23k-token repository
  context, then tool results (0.5-4k tokens) and short answers (tool calls) until the context reaches
  40-60k tokens.
- `no_shared`: single requests of 0.3-3k unique tokens (do no harm: no prefix to exploit).
"""

from __future__ import annotations

import functools
import itertools
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

WORDS = tuple((Path(__file__).resolve().parent / "fleet_words.txt").read_text().split())
# What a mean request costs an engine, for rates relative to a fleet's capacity: prefill tokens per second
# and output tokens per second of one replica at a full batch (Llama-3.1-8B on one H100 under vLLM,
# rounded).
PREFILL_TOKENS_PER_S = 15_000.0
DECODE_TOKENS_PER_S = 2_500.0
# One request's own decode speed in a busy batch (about 15 ms a step), for when a session's turns would
# have been sent had the run started earlier.
REQUEST_DECODE_TOKENS_PER_S = 65.0


@dataclass(frozen=True)
class Text:
    """`words` words drawn with the seed `seed`: made when sent, so a workload holds no long strings."""

    seed: str
    words: int

    def render(self) -> str:
        return _render(self.seed, self.words)


@functools.lru_cache(maxsize=64)  # shared prompts are rendered once
def _render(seed: str, words: int) -> str:
    return " ".join(random.Random(seed).choices(WORDS, k=words))


@dataclass(frozen=True)
class Turn:
    content: Text  # the user message (a question, or a tool's result)
    max_tokens: int
    think_s: float = 0.0  # after the previous answer, before this turn (0 for a session's first)


@dataclass(frozen=True)
class Session:
    start_s: float
    system: Text | None
    turns: tuple[Turn, ...]
    user: str
    prompt_cache_key: str | None = None
    # Turns already sent before the run started (a session in progress joins with its history); the
    # answers to them are stand-ins of their max_tokens words.
    history: int = 0

    def answer(self, turn: int) -> Text:
        """The stand-in answer to a turn sent before the run."""
        return Text(f"{self.turns[turn].content.seed}-answer", self.turns[turn].max_tokens)


@dataclass(frozen=True)
class Workload:
    name: str
    sessions: tuple[Session, ...]

    @property
    def requests(self) -> int:
        return sum(len(s.turns) for s in self.sessions)


# One session of a run from the run's seed and the session's index (its start left at 0).
SessionMaker = Callable[[int, int], Session]


def _rng(name: str, seed: int, i: int) -> tuple[random.Random, str]:
    tag = f"{name}-{seed}-{i}"
    return random.Random(tag), tag


def _multi_tenant(tenants: int) -> SessionMaker:
    def make(seed: int, i: int) -> Session:
        rng, tag = _rng("multi_tenant", seed, i)
        sizes = random.Random(f"tenants-{seed}")
        prompts = [Text(f"tenant{t}-{seed}", sizes.randint(4000, 6000)) for t in range(tenants)]
        tenant = rng.choices(range(tenants), weights=[1 / (r + 1) for r in range(tenants)])[0]
        question = Turn(Text(tag, rng.randint(20, 80)), rng.randint(64, 256))
        user = f"tenant{tenant}-user{rng.randrange(1000)}"
        return Session(0.0, prompts[tenant], (question,), user, prompt_cache_key=f"tenant-{tenant}")

    return make


def _chat(seed: int, i: int) -> Session:
    rng, tag = _rng("chat", seed, i)
    turns = [
        Turn(Text(f"{tag}-{t}", rng.randint(20, 150)), rng.randint(100, 300), rng.uniform(2.0, 6.0) if t else 0.0)
        for t in range(rng.randint(3, 8))
    ]
    return Session(0.0, Text("chat-system", 200), tuple(turns), user=f"chat-user{i}")


def _agentic(seed: int, i: int) -> Session:
    rng, tag = _rng("agentic", seed, i)
    repo = rng.randint(17_000, 23_000)
    turns = [Turn(Text(f"{tag}-repo", repo), rng.randint(50, 300))]
    context, goal = 3000 + repo, rng.randint(40_000, 60_000)
    while context < goal:
        result = Text(f"{tag}-{len(turns)}", rng.randint(500, 4000))
        turns.append(Turn(result, rng.randint(50, 300), rng.uniform(0.2, 2.0)))
        context += result.words + 300
    system = Text("agent-system", 3000)
    return Session(0.0, system, tuple(turns), user=f"dev{i % 8}", prompt_cache_key=f"agent-{i}")


def _no_shared(seed: int, i: int) -> Session:
    rng, tag = _rng("no_shared", seed, i)
    return Session(0.0, None, (Turn(Text(tag, rng.randint(300, 3000)), rng.randint(64, 256)),), user=f"anon{i}")


GENERATORS: dict[str, SessionMaker] = {
    "multi_tenant": _multi_tenant(tenants=4),
    "chat": _chat,
    "agentic": _agentic,
    "no_shared": _no_shared,
}


def arrivals(rng: random.Random, rate: float, start_s: float, end_s: float, bursty: bool) -> Iterator[float]:
    """Arrival times in [start_s, end_s): Poisson at `rate`, or bursty (gamma gaps with a coefficient of
    variation of 3 and the same mean)."""
    t = start_s
    while True:
        t += rng.gammavariate(1 / 9, 9 / rate) if bursty else rng.expovariate(rate)
        if t >= end_s:
            return
        yield t


def turn_time_s(turn: Turn, time_scale: float) -> float:
    """About how long a turn takes to answer on a busy replica whose cache holds the session's prefix."""
    return time_scale * (turn.content.words / PREFILL_TOKENS_PER_S + turn.max_tokens / REQUEST_DECODE_TOKENS_PER_S)


def lifetime_s(session: Session, time_scale: float) -> float:
    return sum(t.think_s + turn_time_s(t, time_scale) for t in session.turns)


def joined(session: Session, arrival_s: float, time_scale: float) -> Session | None:
    """A session that arrived at `arrival_s` < 0 as it is at time 0: the turns it would have sent before
    are history, and it sends the next when it would have (None: it would have ended by then)."""
    t = arrival_s
    for k, turn in enumerate(session.turns):
        t += turn.think_s if k else 0.0
        if t >= 0:
            return replace(session, start_s=t, history=k)
        t += turn_time_s(turn, time_scale)
    return None


def _sessions(name: str, seed: int) -> Iterator[Session]:
    maker = GENERATORS[name]
    return (maker(seed, i) for i in itertools.count())


def sample(name: str, seed: int, n: int = 200) -> list[Session]:
    """The first `n` sessions of a workload (for its mean size)."""
    return list(itertools.islice(_sessions(name, seed), n))


def mean_turns(name: str, seed: int) -> float:
    sessions = sample(name, seed)
    return sum(len(s.turns) for s in sessions) / len(sessions)


def request_cost_s(name: str, seed: int) -> float:
    """An engine's mean seconds of work per request of a workload when every prefix it could reuse is
    cached (only a turn's own message is new; the first turn pays for its system prompt once per
    distinct prompt, neglected): new tokens at the prefill rate, output at a full batch's decode rate."""
    turns = [t for s in sample(name, seed) for t in s.turns]
    work = sum(t.content.words / PREFILL_TOKENS_PER_S + t.max_tokens / DECODE_TOKENS_PER_S for t in turns)
    return work / len(turns)


def capacity_rps(name: str, seed: int, replicas: int, time_scale: float) -> float:
    """Requests per second the fleet serves at full use, by `request_cost_s` (a slower clock, fewer)."""
    return replicas / request_cost_s(name, seed) / time_scale


def scaled_rate(name: str, seed: int, fraction: float, replicas: int, time_scale: float) -> float:
    """A rate as a fraction of the fleet's capacity, to 3 significant figures."""
    rate = fraction * capacity_rps(name, seed, replicas, time_scale)
    return round(rate, 2 - math.floor(math.log10(rate))) if rate > 0 else 0.0


def generate(
    name: str, seed: int, rate: float, duration_s: float, bursty: bool = False, time_scale: float = 1.0
) -> Workload:
    """Sessions arriving over `duration_s` so that requests start at `rate` per second on average. Sessions
    that would have arrived earlier, within a session's lifetime, are in progress at the start (`joined`):
    multi-turn workloads start at their steady population, not empty."""
    sessions = sample(name, seed)
    lifetimes = sorted(lifetime_s(x, time_scale) for x in sessions)
    warmup = lifetimes[len(lifetimes) * 9 // 10] if len(sessions[0].turns) > 1 else 0.0
    times = arrivals(
        random.Random(f"arrivals-{name}-{seed}"), rate / mean_turns(name, seed), -warmup, duration_s, bursty
    )
    out = []
    for session, t in zip(_sessions(name, seed), times, strict=False):
        live = replace(session, start_s=t) if t >= 0 else joined(session, t, time_scale)
        if live is not None:
            out.append(live)
    return Workload(name, tuple(sorted(out, key=lambda x: x.start_s)))
