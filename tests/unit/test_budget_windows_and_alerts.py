"""Budget windows counted from the creation of their key, user or team (calendar months too), and the shapes
of a budget alert."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from iir.v1 import auth_pb2
from iir_common.budget_window import valid_duration, window
from iir_gateway.accounting.alert_webhook import alert_json, payload
from iir_gateway.accounting.budget_alerts import Alert
from iir_gateway.principal import Principal


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp())


def test_a_week_starts_on_the_day_and_hour_of_the_creation() -> None:
    monday = at(2026, 12, 7, 10)  # a Monday; the epoch's weeks start on Thursdays
    week = window("7d", at(2026, 12, 10, 12), monday)
    assert (week.starts_at, week.ends_at) == (monday, at(2026, 12, 14, 10))
    assert window("7d", at(2026, 12, 14, 10), monday).starts_at == at(2026, 12, 14, 10)  # the next one
    assert window("7d", at(2026, 12, 14, 9, 59), monday) == week
    # Without an anchor: from the epoch, under the names the counters always had.
    assert window("7d", at(2026, 12, 10, 12)).starts_at == at(2026, 12, 10)
    assert window("1d", at(2026, 12, 2, 15)).name == f"1d:{at(2026, 12, 2) // 86400}"
    assert window("7d", at(2026, 12, 10, 12), monday).name == f"7d@{monday}"
    half = window("12h", at(2026, 12, 8, 2), monday)
    assert (half.starts_at, half.ends_at) == (at(2026, 12, 7, 22), at(2026, 12, 8, 10))


def test_calendar_words_ignore_the_creation() -> None:
    created = at(2026, 11, 17, 8, 30)
    assert window("day", at(2026, 12, 2, 15), created).starts_at == at(2026, 12, 2)
    month = window("month", at(2026, 12, 2, 15), created)
    assert (month.starts_at, month.ends_at) == (at(2026, 12, 1), at(2027, 1, 1))


def test_months_reset_on_the_day_of_the_creation_or_the_last_of_a_shorter_month() -> None:
    created = at(2027, 1, 31, 9, 30)
    spans = {
        at(2027, 2, 27): (at(2027, 1, 31, 9, 30), at(2027, 2, 28, 9, 30)),
        at(2027, 2, 28, 9, 30): (at(2027, 2, 28, 9, 30), at(2027, 3, 31, 9, 30)),
        at(2027, 3, 31, 9, 29): (at(2027, 2, 28, 9, 30), at(2027, 3, 31, 9, 30)),
        at(2027, 4, 15): (at(2027, 3, 31, 9, 30), at(2027, 4, 30, 9, 30)),
        at(2028, 2, 29, 12): (at(2028, 2, 29, 9, 30), at(2028, 3, 31, 9, 30)),  # a leap year
    }
    for now, (start, end) in spans.items():
        period = window("1mo", now, created)
        assert (period.starts_at, period.ends_at) == (start, end), datetime.fromtimestamp(now, UTC)
        assert period.name == f"1mo@{start}"
    quarter = window("3mo", at(2027, 6, 1), created)
    assert (quarter.starts_at, quarter.ends_at) == (at(2027, 4, 30, 9, 30), at(2027, 7, 31, 9, 30))
    # Without a creation time, `1mo` is the calendar month.
    assert window("1mo", at(2027, 6, 15)).starts_at == at(2027, 6, 1)
    # A moment before the creation (a clock behind the database's) is in the first window.
    assert window("1mo", created - 60, created) == window("1mo", created, created)
    assert window("7d", created - 60, created).starts_at == created


@pytest.mark.parametrize("text", ["", "day", "month", "30m", "12h", "30d", "1mo", "3mo", "99mo"])
def test_valid_durations(text: str) -> None:
    assert valid_duration(text)


@pytest.mark.parametrize("text", ["1w", "0d", "mo", "0mo", "100mo", "1.5mo", "1month", "100000d"])
def test_invalid_durations(text: str) -> None:
    assert not valid_duration(text)


def test_the_principal_carries_creation_times_and_alert_thresholds_of_every_scope() -> None:
    info = auth_pb2.KeyInfo(
        id="k1", name="key", created_at=100, max_budget=5, budget_duration="7d", budget_alert_thresholds=[50, 100]
    )
    info.scopes.append(
        auth_pb2.Scope(kind="team", id="t1", name="search", max_budget=9, created_at=40, budget_alert_thresholds=[80])
    )
    p = Principal.from_key_info(info)
    own, team = p.scopes
    assert (own.created_at, own.budget_alert_thresholds) == (100, (50.0, 100.0))
    assert (team.created_at, team.budget_alert_thresholds) == (40, (80.0,))
    assert Principal.from_dict(p.to_dict()) == p
    # A scope stored by another version (a field this one does not know) still loads.
    stored = p.to_dict()
    stored["owners"][0]["colour"] = "red"
    assert Principal.from_dict(stored).owners == p.owners


ALERT = Alert(
    "team:t1:30d@1796637600:80",
    "team",
    "t1",
    "search",
    80.0,
    412.5,
    500.0,
    "30d",
    at(2026, 12, 7, 10),
    at(2027, 1, 6, 10),
    False,
    at(2026, 12, 28, 14, 2, 11),
)


def test_the_json_alert_names_the_scope_threshold_spend_and_window() -> None:
    body = alert_json(ALERT)
    assert body["scope"] == {"kind": "team", "id": "t1", "name": "search"}
    assert (body["threshold"], body["spent"], body["budget"], body["percent"]) == (80.0, 412.5, 500.0, 82.5)
    assert body["window"] == {"start": "2026-12-07T10:00:00Z", "end": "2027-01-06T10:00:00Z"}
    assert body["id"] == ALERT.id and body["exhausted"] is False and body["currency"] == "USD"
    assert "team search" in body["text"] and "80% alert threshold" in body["text"]
    assert payload(ALERT, "json") == body


def test_the_slack_alert_is_text_only() -> None:
    slack = payload(ALERT, "slack")
    assert list(slack) == ["text"]
    assert slack["text"].startswith("Budget alert: team search has spent $412.50 of $500.00 (82%)")
    used_up = Alert(**{**{f: getattr(ALERT, f) for f in Alert.__dataclass_fields__}, "exhausted": True})
    assert "used up, requests are refused until 2027-01-06 10:00 UTC" in payload(used_up, "slack")["text"]
    forever = Alert(**{**{f: getattr(ALERT, f) for f in Alert.__dataclass_fields__}, "window_end": None})
    assert alert_json(forever)["window"]["end"] is None and "never resets" in alert_json(forever)["text"]
