"""Checks shared by keys, teams and users."""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

from iir_common.budget_window import valid_duration

CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def limit_problems(message: Any) -> list[str]:
    """What is wrong with a message's `rpm_limit`, `tpm_limit`, `max_budget` and `budget_duration`."""
    problems = []
    if min(message.rpm_limit, message.tpm_limit) < 0:
        problems.append("limits must not be negative")
    if not math.isfinite(message.max_budget) or message.max_budget < 0:
        problems.append("max_budget must be a non-negative amount")
    if not valid_duration(message.budget_duration):
        problems.append("budget_duration must be like 30m, 12h, 1d, 7d, 30d (or day, month)")
    return problems


def json_object_problem(text: str) -> str | None:
    if not text:
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict) or len(text) > 16_384:
        return "metadata must be a JSON object (at most 16 kB)"
    return None
