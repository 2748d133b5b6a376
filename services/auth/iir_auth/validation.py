"""Checks shared by keys, teams and users."""

from __future__ import annotations

import functools
import inspect
import math
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import asyncpg
import grpc
import orjson

from iir.v1 import auth_pb2
from iir_common.budget_window import valid_duration

CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Longer than any id of a key, team or user: such a reference names nothing (and quoting it in a
# not-found message would not fit in the reply's trailer, so the caller would see an outage).
MAX_ID_CHARS = 256


def limit_problems(message: Any) -> list[str]:
    """What is wrong with a message's `rpm_limit`, `tpm_limit`, `max_budget` and `budget_duration`."""
    problems = []
    if min(message.rpm_limit, message.tpm_limit) < 0:
        problems.append("limits must not be negative")
    if not math.isfinite(message.max_budget) or message.max_budget < 0:
        problems.append("max_budget must be a non-negative amount")
    if not valid_duration(message.budget_duration):
        problems.append("budget_duration must be like 30m, 12h, 1d, 7d, 30d, 1mo (or day, month)")
    return problems


MAX_ALERT_THRESHOLDS = 10


def alert_threshold_problems(values: Iterable[float]) -> list[str]:
    """What is wrong with budget alert thresholds: percentages of max_budget, above 0, at most 100."""
    values = list(values)
    if len(values) > MAX_ALERT_THRESHOLDS or not all(math.isfinite(v) and 0 < v <= 100 for v in values):
        return [
            f"budget_alert_thresholds must be at most {MAX_ALERT_THRESHOLDS} percentages of max_budget, each above 0"
            " and at most 100"
        ]
    return []


def alert_thresholds(values: Iterable[float]) -> list[float]:
    """Budget alert thresholds as they are stored: each once, in increasing order."""
    return sorted(set(values))


def json_object_problem(text: str) -> str | None:
    if not text:
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict) or len(text) > 16_384 or "\\u0000" in text:
        return "metadata must be a JSON object (at most 16 kB, no NUL characters)"
    return None


T = TypeVar("T")


def refuse_unstorable(cls: type[T]) -> type[T]:
    """Every RPC of a servicer answers INVALID_ARGUMENT, not UNKNOWN, for a value PostgreSQL cannot store
    (an unpaired surrogate, a NUL in JSON), and NOT_FOUND for a reference by an over-long id: bad input,
    not an outage."""
    names = {n for base in cls.__mro__ for n in vars(base) if n[:1].isupper()}
    for name in names:
        method = getattr(cls, name)  # the one the MRO resolves
        if inspect.iscoroutinefunction(method):
            setattr(cls, name, _guarded(method))
    return cls


def _guarded(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(method)
    async def call(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, auth_pb2.KeyRef) and len(request.id) > MAX_ID_CHARS:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no such id (ids have at most {MAX_ID_CHARS} characters)")
        try:
            return await method(self, request, context)
        except asyncpg.DataError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"a value cannot be stored: {exc}")

    return call
