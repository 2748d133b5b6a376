"""The gateway's Prometheus metrics, in a registry of its own (one per app)."""

from __future__ import annotations

from typing import Any, TypeVar

import prometheus_client
from prometheus_client import CollectorRegistry, disable_created_metrics
from prometheus_client.metrics import MetricWrapperBase

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_TOKEN_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.25, 0.5, 1.0)


_T = TypeVar("_T", bound=MetricWrapperBase)


def _fast_labels(cls: type[_T]) -> type[_T]:
    """`cls` whose `labels(...)` answers from a dict once a child exists: prometheus_client checks the
    values and takes a lock on every call, which costs more than the increment (values here are bounded)."""

    class Fast(cls):  # type: ignore[valid-type, misc]
        def labels(self, *values: Any, **named: Any) -> Any:
            if named:
                return super().labels(*values, **named)
            children: dict[tuple[Any, ...], Any] = self.__dict__.setdefault("_children", {})
            child = children.get(values)
            if child is None:
                child = children[values] = super().labels(*values)
            return child

    Fast.__name__ = Fast.__qualname__ = cls.__name__
    return Fast


Counter = _fast_labels(prometheus_client.Counter)
Gauge = _fast_labels(prometheus_client.Gauge)
Histogram = _fast_labels(prometheus_client.Histogram)


class GatewayMetrics:
    def __init__(self, max_keys: int = 1000) -> None:
        disable_created_metrics()
        self.max_keys = max_keys
        self._keys: set[str] = set()
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "iir_gateway_requests",
            "HTTP requests by route and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "iir_gateway_request_duration_seconds",
            "HTTP request latency by route.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.model_requests = Counter(
            "iir_gateway_model_requests",
            "Inference requests by model, provider and status.",
            ["model", "provider", "status"],
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "iir_gateway_upstream_errors",
            "Failed upstream calls by kind.",
            ["provider", "kind"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "iir_gateway_rate_limited", "Requests refused by a per-key limit.", ["limit"], registry=self.registry
        )
        self.ratelimit_errors = Counter(
            "iir_gateway_ratelimit_errors",
            "Limit checks Redis failed, by what the gateway did: refused (503), local (counted in this process),"
            " settle (a settlement lost).",
            ["outcome"],
            registry=self.registry,
        )
        self.budget_alerts = Counter(
            "iir_gateway_budget_alerts",
            "Budget alerts by outcome: sent, failed (every try failed, or the receiver refused it), dropped (too"
            " many pending), already_sent (another replica sent it in this window).",
            ["outcome"],
            registry=self.registry,
        )
        self.limits_degraded = Gauge(
            "iir_gateway_limits_degraded",
            "1 while limits cannot be checked in Redis (its last limit call failed), else 0.",
            registry=self.registry,
        )
        self.model_latency = Histogram(
            "iir_gateway_model_request_duration_seconds",
            "Inference request latency (to the last byte) by model and provider.",
            ["model", "provider"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "iir_gateway_time_to_first_token_seconds",
            "Time from the request to the first streamed bytes, by model.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.itl = Histogram(
            "iir_gateway_inter_token_latency_seconds",
            "Mean time between streamed chunks of a response, by model.",
            ["model"],
            buckets=_TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "iir_gateway_tokens",
            "Tokens by model and kind (prompt, completion).",
            ["model", "kind"],
            registry=self.registry,
        )
        self.key_tokens = Counter(
            "iir_gateway_key_tokens",
            "Tokens by API key id (static keys: static).",
            ["key", "kind"],
            registry=self.registry,
        )
        self.spend = Counter(
            "iir_gateway_spend_usd",
            "Money spent (USD, from the price table) by team (its name; `none` for keys without a team) and model.",
            ["team", "model"],
            registry=self.registry,
        )
        self.cold_start = Histogram(
            "iir_gateway_cold_start_seconds",
            "Time from the first request held for a model at zero replicas to its first ready replica.",
            ["model"],
            buckets=(1, 2.5, 5, 10, 20, 30, 60, 90, 120, 180, 300, 600),
            registry=self.registry,
        )
        self.cold_start_held = Gauge(
            "iir_gateway_cold_start_held",
            "Requests held for a model starting from zero.",
            registry=self.registry,
            multiprocess_mode="livesum",  # with several workers: their sum
        )
        self.queue_depth = Gauge(
            "iir_gateway_queue_depth",
            "Requests waiting for a saturated model.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.cache = Counter(
            "iir_gateway_cache_requests",
            "Response cache lookups by result (hit, miss).",
            ["result"],
            registry=self.registry,
        )
        self.secrets = Counter(
            "iir_gateway_secrets",
            "Secrets found by kind, in requests or answers.",
            ["kind", "where"],
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "iir_gateway_auth_failures", "Refused authentications by reason.", ["reason"], registry=self.registry
        )
        self.auth_validations = Counter(
            "iir_gateway_auth_validations",
            "Key validations sent to the auth service (cache misses, coalesced).",
            registry=self.registry,
        )
        self.auth_lockouts = Counter(
            "iir_gateway_auth_lockouts",
            "Client addresses that reached the failed-authentication limit.",
            registry=self.registry,
        )
        self.auth_stale = Counter(
            "iir_gateway_auth_stale_served",
            "Keys served from the stale key cache because the auth service could not answer.",
            registry=self.registry,
        )

    def team_label(self, team: str) -> str:
        """A team name as a label, bounded like key ids."""
        if not team:
            return "none"
        return team if self.key_label(f"team:{team}") != "other" else "other"

    def key_label(self, key_id: str) -> str:
        """A key id as a label: the first `max_keys` ids seen keep theirs, later ones share `other`."""
        if key_id in self._keys:
            return key_id
        if len(self._keys) < self.max_keys:
            self._keys.add(key_id)
            return key_id
        return "other"
