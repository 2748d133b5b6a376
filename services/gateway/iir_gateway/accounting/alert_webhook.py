"""The budget alert webhook: an alert POSTed as JSON (`json`: its fields and a `text`) or as a Slack
incoming-webhook message (`slack`: `{"text": ...}`) to the URL the gateway's operator set
(`IIR_BUDGET_ALERT_WEBHOOK_URL`; API callers never choose it). A failed try (no connection, a timeout, 408,
429 or 5xx) is tried again after a backoff doubling from `backoff_s` (at most a minute), `retries` times;
any other answer ends it. Redirects are not followed."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from iir_gateway.accounting.budget_alerts import Alert
from iir_gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)

_MAX_BACKOFF_S = 60.0
_RETRIED = {408, 425, 429}


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _usd(amount: float) -> str:
    return f"${amount:,.2f}" if amount >= 0.01 else f"${amount:.2g}"


def _scope_text(alert: Alert) -> str:
    return f"{alert.scope_kind} {alert.scope_name or alert.scope_id}"


def alert_text(alert: Alert) -> str:
    """One line for people (Slack's `text`)."""
    percent = 100 * alert.spent / alert.budget if alert.budget else 0.0
    end = f"{_iso(alert.window_end).replace('T', ' ')[:16]} UTC" if alert.window_end else ""
    head = f"Budget alert: {_scope_text(alert)} has spent {_usd(alert.spent)} of {_usd(alert.budget)} ({percent:.0f}%)"
    if alert.exhausted:
        return f"{head}: its budget is used up, requests are refused {f'until {end}' if end else 'from now on'}."
    resets = f"resets at {end}" if end else "never resets"
    return f"{head}, past its {alert.threshold:g}% alert threshold; the budget {resets}."


def alert_json(alert: Alert) -> dict[str, Any]:
    """The alert's fields, for receivers that read JSON."""
    return {
        "type": "budget_alert",
        "id": alert.id,
        "scope": {"kind": alert.scope_kind, "id": alert.scope_id, "name": alert.scope_name},
        "threshold": alert.threshold,
        "spent": round(alert.spent, 9),
        "budget": alert.budget,
        "currency": "USD",
        "percent": round(100 * alert.spent / alert.budget, 2) if alert.budget else 0.0,
        "exhausted": alert.exhausted,
        "budget_duration": alert.budget_duration,
        "window": {
            "start": _iso(alert.window_start),
            "end": _iso(alert.window_end) if alert.window_end else None,
        },
        "at": _iso(alert.at),
        "text": alert_text(alert),
    }


def payload(alert: Alert, shape: str) -> dict[str, Any]:
    """The body sent: `json` (every field, and `text`) or `slack` (`text` only)."""
    return {"text": alert_text(alert)} if shape == "slack" else alert_json(alert)


class AlertWebhook:
    def __init__(
        self,
        url: str,
        metrics: GatewayMetrics,
        shape: str = "json",
        timeout_s: float = 5.0,
        retries: int = 5,
        backoff_s: float = 1.0,
    ) -> None:
        self._url = url
        self._host = urlsplit(url).hostname or "?"  # logged; the URL may hold a secret (Slack's does)
        self.metrics = metrics
        self.shape = shape
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.retries = retries
        self.backoff_s = backoff_s
        self._session: aiohttp.ClientSession | None = None

    async def send(self, alert: Alert) -> None:
        """POSTs the alert, trying again on failures that may pass; logs and counts the outcome."""
        body = orjson.dumps(payload(alert, self.shape))
        why = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(min(_MAX_BACKOFF_S, self.backoff_s * 2 ** (attempt - 1)))
            status, why = await self._post(body)
            if 200 <= status < 300:
                self.metrics.budget_alerts.labels("sent").inc()
                log.info("budget alert sent", extra={"alert": alert.id, "attempts": attempt + 1})
                return
            if status and status < 500 and status not in _RETRIED:
                break  # the receiver refuses it: trying again would not help
        self.metrics.budget_alerts.labels("failed").inc()
        log.error(
            "budget alert not sent",
            extra={"alert": alert.id, "webhook_host": self._host, "error": why, "attempts": attempt + 1},
        )

    async def _post(self, body: bytes) -> tuple[int, str]:
        """The answer's status (0: none came) and, unless 2xx, why it failed."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        try:
            async with self._session.post(
                self._url, data=body, headers={"Content-Type": "application/json"}, allow_redirects=False
            ) as resp:
                await resp.read()
                return resp.status, f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return 0, repr(exc)[:200]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
