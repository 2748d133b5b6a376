"""The request log through the API as an admin and a key use it: every request a key made (answered,
streamed, failed) with its details, filtered and paged; a key sees its own only, and only an admin key
sees the others'."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import openai
import pytest

from iir_dev.stack import Stack
from tests.conftest import MASTER_KEY, SERVED
from tests.waiting import wait_for

MODEL = f"local/{SERVED}"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _logs(stack: Stack, key: str, path: str = "/api/v1/logs", **params: Any) -> httpx.Response:
    return httpx.get(f"{stack.gateway_url}{path}", headers=bearer(key), params=params, timeout=30)


def test_an_admin_reads_every_request_with_its_details(stack: Stack) -> None:
    key = stack.create_key(f"logged-{uuid.uuid4().hex[:6]}")
    client = openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=key, max_retries=0)
    whole = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=5, metadata={"app": "docs"}
    )
    streamed = list(
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=5, stream=True
        )
    )
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="local/no-such-model", messages=[{"role": "user", "content": "x"}])
    key_id = httpx.get(f"{stack.gateway_url}/api/v1/key/info", headers=bearer(key)).json()["id"]

    def three() -> list[dict[str, Any]] | None:
        data: list[dict[str, Any]] = _logs(stack, MASTER_KEY, key_id=key_id).json()["data"]
        return data if len(data) == 3 else None

    failed, stream, answered = wait_for(three, timeout=30, interval=0.3, what="the three requests in the log")
    assert answered["request_id"] == whole.headers["x-request-id"] and answered["key_name"].startswith("logged-")
    assert answered["status"] == 200 and answered["model"] == MODEL and answered["answered_by"] == MODEL
    assert answered["prompt_tokens"] > 0 and answered["completion_tokens"] > 0 and answered["latency_ms"] > 0
    assert answered["provider"] == "local" and answered["target"] and answered["metadata"] == {"app": "docs"}
    assert answered["stream"] is False and answered["ttft_ms"] is None and answered["fallbacks"] == []
    assert answered["operation"] == "chat/completions" and answered["cache_hit"] is False
    assert stream["stream"] is True and stream["ttft_ms"] > 0 and streamed
    assert failed["status"] == 404 and failed["error_code"] == "model_not_found" and failed["cost"] == 0

    # Filters and paging: one entry a page, each page after the last.
    assert [e["id"] for e in _logs(stack, MASTER_KEY, key_id=key_id, errors="true").json()["data"]] == [failed["id"]]
    assert _logs(stack, MASTER_KEY, request_id=answered["request_id"]).json()["data"][0]["id"] == answered["id"]
    seen, after = [], ""
    while True:
        page = _logs(stack, MASTER_KEY, key_id=key_id, limit=1, **({"after": after} if after else {})).json()
        seen += [e["id"] for e in page["data"]]
        if not page["has_more"]:
            break
        after = page["next"]
    assert seen == [failed["id"], stream["id"], answered["id"]]
    assert _logs(stack, MASTER_KEY, key_id=key_id, since="2999-01-01").json()["data"] == []
    today = datetime.now(UTC).date().isoformat()  # a day named as `until` is kept whole
    assert len(_logs(stack, MASTER_KEY, key_id=key_id, since=today, until=today).json()["data"]) == 3


def test_a_key_sees_its_own_requests_only(stack: Stack) -> None:
    mine, other = stack.create_key("log-mine"), stack.create_key("log-other")
    for key in (mine, other):
        openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=key, max_retries=0).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=3
        )
    own = wait_for(
        lambda: _logs(stack, mine, "/api/v1/key/logs").json()["data"], timeout=30, interval=0.3, what="its log"
    )
    assert {e["key_name"] for e in own} == {"log-mine"}
    # The key's own log ignores another key's id; the admin log refuses a plain key.
    assert {e["key_name"] for e in _logs(stack, mine, "/api/v1/key/logs", key_id="x").json()["data"]} == {"log-mine"}
    refused = _logs(stack, mine)
    assert refused.status_code == 403 and refused.json()["error"]["code"]


@pytest.mark.parametrize(
    ("params", "param"),
    [({"since": "yesterday"}, "since"), ({"limit": "0"}, "limit"), ({"status": "abc"}, "status"), ({"after": "x"}, "")],
)
def test_bad_queries_are_400s(stack: Stack, params: dict[str, str], param: str) -> None:
    resp = _logs(stack, MASTER_KEY, **params)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == (param or None)


SECRET = "sk-proj-AbC12dEf34GhI56jKl78mNo90pQr12StU34vWx56Yz78aB"


def _bodies(stack: Stack, key_id: str) -> list[dict[str, Any]] | None:
    data: list[dict[str, Any]] = _logs(stack, MASTER_KEY, key_id=key_id, include="bodies").json()["data"]
    return data if len(data) >= 2 else None


def test_bodies_are_logged_scrubbed_for_the_keys_and_teams_that_ask(stack: Stack) -> None:
    admin = bearer(MASTER_KEY)
    url = stack.gateway_url
    logged = httpx.post(f"{url}/api/v1/apikeys", headers=admin, json={"name": "bodies", "log_bodies": True}).json()
    assert logged["log_bodies"] is True
    team = httpx.post(f"{url}/api/v1/teams", headers=admin, json={"name": f"bodies-{uuid.uuid4().hex[:6]}"}).json()
    teamed = httpx.post(f"{url}/api/v1/apikeys", headers=admin, json={"name": "in-team", "team_id": team["id"]}).json()
    quiet = httpx.post(f"{url}/api/v1/apikeys", headers=admin, json={"name": "no-bodies"}).json()
    turned_on = httpx.patch(f"{url}/api/v1/teams/{team['id']}", headers=admin, json={"log_bodies": True})
    assert turned_on.json()["log_bodies"] is True
    for key in (logged, teamed, quiet):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=key["key"], max_retries=0)
        question = f"Remember {SECRET} and say hello " + "x" * 20_000  # a secret, and more than the cap
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": question}], max_tokens=4)
        list(client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True))
    for key in (logged, teamed):
        stream, whole = wait_for(lambda k=key: _bodies(stack, k["id"]), timeout=30, interval=0.3, what="bodies")  # type: ignore[misc]
        assert SECRET not in whole["request_body"] and "REDACTED" in whole["request_body"]
        assert len(whole["request_body"]) == 16_384  # IIR_REQUEST_LOG_BODY_MAX_CHARS
        assert json.loads(whole["response_body"])["choices"][0]["message"]["content"]
        # A stream's answer, put together from its chunks.
        assert json.loads(stream["response_body"])["object"] == "chat.completion"
        assert json.loads(stream["request_body"])["messages"] == [{"role": "user", "content": "hi"}]
    quiet_entries = wait_for(lambda: _bodies(stack, quiet["id"]), timeout=30, interval=0.3, what="its log")
    assert all("request_body" not in e for e in quiet_entries)
    # Without include=bodies, no entry carries them.
    assert all("request_body" not in e for e in _logs(stack, MASTER_KEY, key_id=logged["id"]).json()["data"])
