"""Requests held for a model scaled to zero: released together when it is ready, bounded, timed out."""

from __future__ import annotations

import asyncio

import pytest

from iir_gateway.errors import APIError
from iir_gateway.providers.local.cold_start import ColdStarts


async def test_held_requests_go_when_the_model_is_ready_and_the_wait_is_measured() -> None:
    ready = False
    kicks: list[int] = []
    observed: list[tuple[str, float]] = []
    starts = ColdStarts(on_demand=lambda: kicks.append(1), observe=lambda m, s: observed.append((m, s)))
    held = [asyncio.create_task(starts.hold("local/m", lambda: ready)) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert starts.held() == {"local/m": 3} and kicks  # the registry hears of it at once
    starts.changed("local/m")  # a change, but no replica yet: they stay
    await asyncio.sleep(0.05)
    assert starts.total == 3
    ready = True
    starts.changed("local/m")
    await asyncio.wait_for(asyncio.gather(*held), 1)
    assert starts.held() == {} and len(observed) == 1 and observed[0][0] == "local/m"


async def test_a_ready_model_is_not_held() -> None:
    kicks: list[int] = []
    observed: list[tuple[str, float]] = []
    starts = ColdStarts(on_demand=lambda: kicks.append(1), observe=lambda m, s: observed.append((m, s)))
    await asyncio.wait_for(starts.hold("local/m", lambda: True), 0.1)
    assert kicks == [] and observed == []  # no cold start measured, nothing told to the registry


async def test_timeout_and_bound_give_503_with_retry_after() -> None:
    starts = ColdStarts(max_held=1, timeout_s=0.2)
    first = asyncio.create_task(starts.hold("local/m", lambda: False))
    await asyncio.sleep(0.02)
    with pytest.raises(APIError) as full:
        await starts.hold("local/n", lambda: False)
    assert full.value.status == 503 and full.value.code == "model_cold_start_timeout"
    with pytest.raises(APIError) as late:
        await first
    assert late.value.code == "model_cold_start_timeout" and late.value.headers["retry-after"] == "30"
    assert starts.total == 0
