"""Budget periods: `1d`, `7d`, `30d`, `12h`, `30m` (windows counted from the Unix epoch, UTC), the
calendar words `day` and `month`, or `""` for one budget for all time."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

_DURATION = re.compile(r"^([1-9][0-9]{0,4})([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_FOREVER = 2**62


def valid_duration(text: str) -> bool:
    return text in ("", "day", "month") or _DURATION.match(text) is not None


@dataclass(frozen=True, slots=True)
class Window:
    """The current budget window: a name for its counter, and when it ends and began (Unix seconds)."""

    name: str
    ends_at: int
    starts_at: int = 0

    def ttl_s(self, now: float) -> int:
        """How long the window's counter must be kept: to its end, and a day more for late settling."""
        return max(1, int(self.ends_at - now)) + 86400 if self.ends_at < _FOREVER else 400 * 86400


def window(duration: str, now: float) -> Window:
    """The window of `duration` that holds the moment `now` (Unix seconds)."""
    if duration == "month":
        moment = datetime.fromtimestamp(now, UTC)
        nxt = datetime(moment.year + moment.month // 12, moment.month % 12 + 1, 1, tzinfo=UTC)
        first = datetime(moment.year, moment.month, 1, tzinfo=UTC)
        return Window(moment.strftime("%Y-%m"), int(nxt.timestamp()), int(first.timestamp()))
    if duration == "day":
        duration = "1d"
    match = _DURATION.match(duration)
    if match is None:
        return Window("all", _FOREVER)
    length = int(match.group(1)) * _UNIT_S[match.group(2)]
    index = int(now // length)
    return Window(f"{duration}:{index}", (index + 1) * length, index * length)
