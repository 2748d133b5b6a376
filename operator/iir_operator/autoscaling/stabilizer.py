"""Stabilisation windows, as the HorizontalPodAutoscaler's: scale up to the lowest recommendation of the
scale-up window, down to the highest of the scale-down window, so a brief dip or spike moves nothing."""

from __future__ import annotations

from collections import deque


class Stabilizer:
    def __init__(self) -> None:
        self._history: dict[object, deque[tuple[float, int]]] = {}

    def apply(self, key: object, recommended: int, current: int, now: float, up_s: float, down_s: float) -> int:
        history = self._history.setdefault(key, deque())
        history.append((now, recommended))
        horizon = max(up_s, down_s)
        while history and now - history[0][0] > horizon:
            history.popleft()
        if recommended > current:
            return max(current, min(r for t, r in history if now - t <= up_s))
        if recommended < current:
            return min(current, max(r for t, r in history if now - t <= down_s))
        return current

    def forget(self, key: object) -> None:
        self._history.pop(key, None)
