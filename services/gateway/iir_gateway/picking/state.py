"""What the gateway knows of each endpoint: in-flight requests, vLLM's load metrics, health, cached prefixes."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class EndpointState:
    url: str
    # Requests this gateway process has in flight there (known at once, unlike scraped metrics).
    outstanding: int = 0
    # From the replica's own /metrics, scraped by the registry: vllm:num_requests_waiting/running and
    # vllm:kv_cache_usage_perc (0..1).
    waiting: float = 0.0
    running: float = 0.0
    kv_cache_usage: float = 0.0
    # From vllm:lora_requests_info: adapters in its running and waiting batches, and --max-loras.
    running_adapters: frozenset[str] = frozenset()
    waiting_adapters: frozenset[str] = frozenset()
    max_loras: int = 0
    # Passive health: consecutive failures; ejected until `ejected_until`, then one probe request.
    failures: int = 0
    ejected_until: float = 0.0
    ejections: int = 0
    # Prefill tokens this gateway process sent here, as of `backlog_at` (predicted_ttft drains it).
    backlog_tokens: float = 0.0
    backlog_at: float = 0.0
    # Requests picked here, decayed exponentially (predicted_ttft's arrival rate), as of `arrivals_at`.
    arrivals: float = 0.0
    arrivals_at: float = 0.0
    # Prompt tokens picked here, and of those the ones predicted cached (compare vllm:prefix_cache_hits).
    prompt_tokens: int = 0
    predicted_cached_tokens: int = 0
    # Prefix block hashes recently sent here (an approximation of the replica's prefix cache), LRU.
    prefixes: OrderedDict[int, None] = field(default_factory=OrderedDict)

    @property
    def load(self) -> float:
        """Queued work: what we have in flight there, or what it reports waiting, whichever is larger."""
        queued = self.waiting + self.running
        return float(self.outstanding) if self.outstanding > queued else queued

    def prefix_match(self, blocks: list[int]) -> int:
        """How many leading blocks of `blocks` this gateway recently sent here."""
        matched = 0
        for block in blocks:
            if block not in self.prefixes:
                break
            matched += 1
        return matched

    def healthy(self, now: float) -> bool:
        return now >= self.ejected_until


class EndpointStates:
    """Endpoint states by URL, shared by every model served there."""

    def __init__(
        self,
        failure_threshold: int = 3,
        base_ejection_s: float = 5.0,
        max_ejection_s: float = 60.0,
        prefix_capacity: int = 50_000,
    ) -> None:
        self._states: dict[str, EndpointState] = {}
        self.failure_threshold = failure_threshold
        self.base_ejection_s = base_ejection_s
        self.max_ejection_s = max_ejection_s
        self.prefix_capacity = prefix_capacity

    def get(self, url: str) -> EndpointState:
        state = self._states.get(url)
        if state is None:
            state = self._states[url] = EndpointState(url)
        return state

    def all(self) -> list[EndpointState]:
        return list(self._states.values())

    def started(self, url: str) -> None:
        self.get(url).outstanding += 1

    def finished(self, url: str, ok: bool | None, now: float | None = None) -> None:
        """A request ended; `ok` False for a connection failure or a 5xx, which counts toward ejection,
        None when it says nothing of the upstream's health (a 429, the caller's own 4xx)."""
        state = self.get(url)
        state.outstanding = max(0, state.outstanding - 1)
        if ok is None:
            return
        if ok:
            state.failures = 0
            state.ejections = 0
            return
        state.failures += 1
        if state.failures >= self.failure_threshold:
            now = time.monotonic() if now is None else now
            backoff = min(self.max_ejection_s, self.base_ejection_s * 2**state.ejections)
            state.ejected_until = now + backoff
            state.ejections += 1
            state.failures = self.failure_threshold - 1  # after the ejection, one failed probe ejects again

    def update_metrics(
        self,
        url: str,
        waiting: float,
        running: float,
        kv_cache_usage: float,
        adapters: tuple[frozenset[str], frozenset[str], int] = (frozenset(), frozenset(), 0),
    ) -> None:
        """Fresh figures from the replica's /metrics; `adapters` is (running, waiting, max_loras)."""
        state = self.get(url)
        state.waiting, state.running, state.kv_cache_usage = waiting, running, kv_cache_usage
        state.running_adapters, state.waiting_adapters, state.max_loras = adapters

    def remember_prefixes(self, url: str, blocks: list[int]) -> None:
        prefixes = self.get(url).prefixes
        for block in blocks:
            prefixes[block] = None
            prefixes.move_to_end(block)
        while len(prefixes) > self.prefix_capacity:
            prefixes.popitem(last=False)

    def forget(self, urls: Iterable[str]) -> None:
        """Drops the state of replicas no model has any more (their prefixes, and their metric series)."""
        for url in urls:
            self._states.pop(url, None)
