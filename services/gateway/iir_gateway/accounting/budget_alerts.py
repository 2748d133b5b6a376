"""Budget alerts: when a money budget reaches one of its scope's thresholds (percentages of `max_budget`),
the alert webhook is told once per budget window and threshold, over every gateway replica.

"Once" is a Redis key per scope, window and threshold, set with NX and kept to the window's end (and a day
more, as the budget counters): the replica that sets it sends the alert, the others do not. Spent is what
the budget counter holds: the cost of the requests that ended plus what running requests reserved, so an
alert can come early under concurrency, never late. A budget refusing a request because what is left
cannot pay for its prompt and one completion token is used up: every threshold counts as reached.

Nothing here runs on the request path: `reached` only starts a task; the claim and the delivery (with
its retries) run after. An alert is sent at most once: one whose delivery fails after every retry, or
whose gateway stops meanwhile, is logged and counted, not sent again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from iir_gateway.accounting.admission import NANO, Budget
from iir_gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)

_MAX_KNOWN = 100_000  # claims this process made or saw taken, remembered to spare Redis the round trip


@dataclass(frozen=True, slots=True)
class Alert:
    """A budget that reached a threshold in its current window (times in Unix seconds, money in USD)."""

    id: str  # scope kind, id, window and threshold: the same on every replica (receivers may dedupe on it)
    scope_kind: str  # "key", "user", "team"
    scope_id: str
    scope_name: str
    threshold: float  # percent of the budget
    spent: float
    budget: float
    budget_duration: str
    window_start: int
    window_end: int | None  # None: one budget for all time
    exhausted: bool  # refused a request it had too little left for
    at: float


Deliver = Callable[[Alert], Awaitable[None]]


class BudgetAlerts:
    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str,
        deliver: Deliver,
        metrics: GatewayMetrics,
        max_pending: int = 1000,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.deliver = deliver
        self.metrics = metrics
        self.max_pending = max_pending
        self._known: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def reached(self, g: Budget, used: int, now: float, exhausted: bool = False) -> None:
        """The money budget `g` holds `used` nano-USD (or, `exhausted`, refused a request for want of
        money): claims and sends an alert for each of its scope's thresholds reached, unless some replica
        did in this window. Never blocks, never raises."""
        scope = g.scope
        if g.kind != "money" or not scope.budget_alert_thresholds or g.limit <= 0:
            return
        for threshold in scope.budget_alert_thresholds:
            if not exhausted and used < threshold * g.limit / 100:
                continue
            alert_id = f"{scope.kind}:{scope.id}:{g.window.name}:{threshold:g}"
            if alert_id in self._known:
                continue
            if len(self._tasks) >= self.max_pending:
                self.metrics.budget_alerts.labels("dropped").inc()
                log.error("budget alert dropped: too many pending", extra={"alert": alert_id})
                continue
            if len(self._known) >= _MAX_KNOWN:
                self._known.clear()
            self._known.add(alert_id)
            alert = Alert(
                alert_id,
                scope.kind,
                scope.id,
                scope.name,
                threshold,
                max(0, used) / NANO,
                g.limit / NANO,
                scope.budget_duration,
                g.window.starts_at,
                None if g.window.endless else g.window.ends_at,
                exhausted,
                now,
            )
            self._spawn(self._claim_and_send(alert, g.window.ttl_s(now)))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _claim_and_send(self, alert: Alert, ttl_s: int) -> None:
        try:
            claimed = await self.redis.set(f"{self.prefix}budget-alert:{alert.id}", 1, nx=True, ex=ttl_s)
        except RedisError as exc:
            self._known.discard(alert.id)  # the next settlement past the threshold tries again
            log.warning("budget alert not claimed: Redis failed", extra={"alert": alert.id, "error": repr(exc)[:200]})
            return
        if not claimed:  # another replica (or this one, before a restart) sent it in this window
            self.metrics.budget_alerts.labels("already_sent").inc()
            return
        try:
            await self.deliver(alert)
        except Exception:  # a bug in delivery must not go unseen, nor escape the task
            self.metrics.budget_alerts.labels("failed").inc()
            log.exception("budget alert not sent", extra={"alert": alert.id})

    async def close(self) -> None:
        """Stops the alerts being sent (each one lost is logged)."""
        pending = list(self._tasks)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if pending:
            log.warning("budget alerts not sent: the gateway is stopping", extra={"alerts": len(pending)})
