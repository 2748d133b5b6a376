"""A team's money budget hit by concurrent streams through two gateway processes stops within one
request's cost of the budget: cost is reserved on admission and settled when each stream ends."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from tests.concurrency.conftest import Pair, bearer, run, stream_usage
from tests.conftest import SLOW_PRICE
from tests.waiting import wait_for

BODY = {"model": "local/slow", "messages": [{"role": "user", "content": "count to twenty"}], "max_tokens": 20}


def test_team_budget_holds_under_concurrent_streams_on_two_gateways(pair: Pair) -> None:
    # One stream: about 20 prompt and 20 completion tokens at the slow model's dear price (~$0.06).
    one_stream = (20 * SLOW_PRICE["inputPerMillion"] + 20 * SLOW_PRICE["outputPerMillion"]) / 1e6
    budget = round(one_stream * 4, 6)
    team = pair.admin("POST", "/api/v1/teams", json={"name": f"t-{uuid.uuid4().hex[:6]}", "max_budget": budget})
    assert team.status_code == 201, team.text
    team_id = team.json()["id"]
    keys = [pair.key(team_id=team_id)["key"] for _ in range(3)]

    async def wave() -> list[tuple[int, int]]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(
                *(
                    stream_usage(client, (pair.a, pair.b)[i % 2], keys[i % 3], BODY)
                    for i in range(16)  # 16 streams at once, alternating gateways and keys
                )
            )

    # Waves of concurrent streams until the budget refuses them all (reservations are settled between).
    admitted: list[tuple[int, int]] = []
    for _ in range(12):
        results = run(wave())
        assert all(status in (200, 429) for status, _ in results), results
        admitted += [r for r in results if r[0] == 200]
        if all(status == 429 for status, _ in results):
            break
    else:
        raise AssertionError("the team's budget never refused")

    def spend_row() -> dict[str, Any]:
        rows = pair.admin("GET", "/api/v1/spend", params={"group_by": "team"}).json()["data"]
        return next((r for r in rows if r["group"] == team_id), {"cost": 0.0, "requests": 0})

    assert wait_for(lambda: spend_row()["requests"] == len(admitted), timeout=10)
    total = spend_row()["cost"]
    largest = max(
        (tokens * SLOW_PRICE["outputPerMillion"]) / 1e6 + 40 * SLOW_PRICE["inputPerMillion"] / 1e6
        for _, tokens in admitted
    )
    print(
        f"team budget ${budget:.4f}: {len(admitted)} streams admitted in all, spent ${total:.4f} "
        f"(over by ${max(0.0, total - budget):.4f}; one request costs at most ${largest:.4f})"
    )
    assert total <= budget + largest
    for url in (pair.a, pair.b):
        resp = httpx.post(f"{url}/v1/chat/completions", json=BODY, headers=bearer(keys[0]), timeout=30)
        assert resp.status_code == 429 and resp.json()["error"]["code"] == "insufficient_quota"
