"""Budget periods and their windows.

`30m`, `12h`, `1d`, `7d`, `30d` (up to 99999 of a unit) and `1mo`, `3mo` (1 to 99 calendar months) are
counted from an anchor, the creation of the key, user or team the budget belongs to: a `7d` budget created
on a Monday at 10:00 resets every Monday at 10:00; a `1mo` budget created on the 31st resets on the 31st,
or a shorter month's last day, at the time of day it was created. Without an anchor (0) they are counted
from the Unix epoch (UTC), so `1mo` is then the calendar month. The calendar words `day` (from UTC
midnight) and `month` (from the 1st, UTC) ignore the anchor; `""` is one budget for all time.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime

_DURATION = re.compile(r"^([1-9][0-9]{0,4})([smhd])$")
_MONTHS = re.compile(r"^([1-9][0-9]?)mo$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_FOREVER = 2**62


def valid_duration(text: str) -> bool:
    return text in ("", "day", "month") or _DURATION.match(text) is not None or _MONTHS.match(text) is not None


@dataclass(frozen=True, slots=True)
class Window:
    """The current budget window: a name for its counter, and when it ends and began (Unix seconds)."""

    name: str
    ends_at: int
    starts_at: int = 0

    @property
    def endless(self) -> bool:
        """One budget for all time: the window never ends."""
        return self.ends_at >= _FOREVER

    def ttl_s(self, now: float) -> int:
        """How long the window's counter must be kept: to its end, and a day more for late settling."""
        return max(1, int(self.ends_at - now)) + 86400 if self.ends_at < _FOREVER else 400 * 86400


def window(duration: str, now: float, anchor: int = 0) -> Window:
    """The window of `duration` that holds the moment `now`, counted from `anchor` (Unix seconds: the
    creation of the budget's key, user or team; 0: the Unix epoch). A moment before the anchor (a clock
    behind the database's) is in the first window."""
    if duration == "month":
        moment = datetime.fromtimestamp(now, UTC)
        nxt = datetime(moment.year + moment.month // 12, moment.month % 12 + 1, 1, tzinfo=UTC)
        first = datetime(moment.year, moment.month, 1, tzinfo=UTC)
        return Window(moment.strftime("%Y-%m"), int(nxt.timestamp()), int(first.timestamp()))
    if duration == "day":
        duration, anchor = "1d", 0
    now = max(now, anchor)
    if months := _MONTHS.match(duration):
        return _months(int(months.group(1)), now, anchor)
    match = _DURATION.match(duration)
    if match is None:
        return Window("all", _FOREVER)
    length = int(match.group(1)) * _UNIT_S[match.group(2)]
    index = int((now - anchor) // length)
    start = anchor + index * length
    # Counters of windows from the epoch keep the names they always had.
    name = f"{duration}:{index}" if anchor == 0 else f"{duration}@{start}"
    return Window(name, start + length, start)


def add_months(moment: datetime, months: int) -> datetime:
    """`moment` so many calendar months later (or earlier), on the same day, or the month's last day."""
    years, month = divmod(moment.month - 1 + months, 12)
    year = moment.year + years
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


def _months(count: int, now: float, anchor: int) -> Window:
    """The window of `count` months from `anchor` that holds `now`; each start is counted from the anchor
    itself, so a budget created on the 31st is back on the 31st after a short month."""
    first = datetime.fromtimestamp(anchor, UTC)
    moment = datetime.fromtimestamp(now, UTC)
    index = ((moment.year - first.year) * 12 + moment.month - first.month) // count
    start = add_months(first, index * count)
    if start > moment:  # the same month as the anchor's day, before it
        index -= 1
        start = add_months(first, index * count)
    begins = int(start.timestamp())
    return Window(f"{count}mo@{begins}", int(add_months(first, (index + 1) * count).timestamp()), begins)
