"""What admitting a request asks of the limits and budgets, and what it reserved."""

from __future__ import annotations

import math
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Protocol

from iir_common.budget_window import Window
from iir_gateway.principal import Scope

NANO = 1_000_000_000  # money is counted in nano-USD, integers in Redis


def duration(ms: float) -> str:
    """OpenAI's reset format: `120ms`, `1s`, `6m0s`, `1h2m3s`."""
    if ms < 1000:
        return f"{max(0, math.ceil(ms))}ms"
    seconds = math.ceil(ms / 1000)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


class SpendSource(Protocol):
    def spent_since(self, scope_kind: str, scope_id: str, since_s: int) -> Awaitable[tuple[int, int]]:
        """(nano-USD, tokens) the scope spent from `since_s` on, from the spend log."""
        ...


@dataclass(frozen=True, slots=True)
class BudgetAsk:
    """What a request may spend at worst: its prompt, and `completion` tokens for each of its `choices`
    answers. With `flexible` (no max_tokens was given) fewer completion tokens may be granted, at least one."""

    prompt_tokens: int
    prompt_cost: int  # nano-USD
    completion: int  # per choice
    completion_price: float  # nano-USD per completion token
    choices: int = 1
    flexible: bool = False

    def tokens(self, k: int) -> int:
        return self.prompt_tokens + self.choices * k

    def cost(self, k: int) -> int:
        return math.ceil(self.prompt_cost + self.completion_price * self.choices * k)


@dataclass(frozen=True, slots=True)
class Bucket:
    """A per-minute limit of one scope: what it counts ("requests" or "tokens"), whose, and the cost."""

    kind: str
    scope: Scope
    limit: int
    cost: int


@dataclass(frozen=True, slots=True)
class Budget:
    """A budget of one scope in its current window: "tokens" (the key's) or "money" (nano-USD), and the
    worst case asked of it: `fixed` plus `unit` per completion token."""

    kind: str
    scope: Scope
    limit: int
    window: Window
    fixed: int
    unit: float


@dataclass(slots=True)
class Admission:
    """What was reserved, the `x-ratelimit-*` headers to put on the response, and what settling needs."""

    reserved_tokens: int  # from the token buckets
    headers: dict[str, str]
    reserved_cost: int = 0  # nano-USD, from each money budget
    buckets: list[Bucket] = field(default_factory=list)
    budgets: list[Budget] = field(default_factory=list)
    parallel_member: str = ""
    budget_tokens: int = 0  # from the key's token budget
    granted: int | None = None  # completion tokens per choice the budgets allow (None: no budget asked)
    local: bool = False  # counted in this process (Redis failed)

    @property
    def holds_anything(self) -> bool:
        return bool(self.reserved_tokens or self.budgets or self.parallel_member)


NO_LIMITS = Admission(0, {})
