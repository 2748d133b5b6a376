"""Secrets in every place a request carries them, spelled to evade, in answers spelled one character per
chunk, and in async jobs at rest: none reaches the upstream, the client or Redis."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai

from iir_dev.stack import Stack
from tests.fakes.openai_api import LEAKED
from tests.security.test_r3_scrubbing import _stored
from tests.unit.test_secret_scrubber import evasions
from tests.waiting import wait_for

KEY = "sk-proj-Qw3rTy8uIoP2aSdF5gHjK7lZxC9vBnM4qWeRtY6uIoPaSd"
HIDDEN = "8uIoP2aSdF5gHjK7"


def placements() -> list[tuple[str, dict[str, Any]]]:
    """Request bodies with the key in each field a reviewer found unscrubbed."""
    msg = [{"role": "user", "content": "hi"}]
    fn = {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": f"uses {KEY}",
            "parameters": {"type": "object", "properties": {"q": {"type": "string", "description": f"default {KEY}"}}},
        },
    }
    data_url = "data:text/plain;base64," + __import__("base64").b64encode(f"token {KEY}".encode()).decode()
    return [
        (
            "image_url query",
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "see"},
                            {"type": "image_url", "image_url": {"url": f"https://x.test/a.png?k={KEY}"}},
                        ],
                    }
                ]
            },
        ),
        (
            "text data URL",
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "file"},
                            {"type": "file", "file": {"file_data": data_url}},
                        ],
                    }
                ]
            },
        ),
        ("message name", {"messages": [{"role": "user", "name": KEY, "content": "hi"}]}),
        ("tool description", {"messages": msg, "tools": [fn]}),
        ("user", {"messages": msg, "user": KEY}),
        ("metadata", {"messages": msg, "metadata": {"note": KEY}}),
        ("stop", {"messages": msg, "stop": [KEY]}),
        (
            "tool call arguments",
            {
                "messages": [
                    *msg,
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "c1",
                                "type": "function",
                                "function": {"name": "f", "arguments": json.dumps({"k": KEY})},
                            }
                        ],
                    },
                    {"role": "tool", "tool_call_id": "c1", "content": f"result {KEY}"},
                ]
            },
        ),
    ]


def upstream_saw(fake_openai: str) -> str:
    return httpx.get(f"{fake_openai}/_last").text


def test_every_field_and_every_evasion_is_scrubbed_before_the_upstream(chart_stack: Stack, fake_openai: str) -> None:
    key = chart_stack.create_key("scrub")
    url = f"{chart_stack.gateway_url}/v1/chat/completions"
    leaks = []
    cases = placements()
    for kind, hidden, texts in evasions():
        if kind != "none":
            cases.append(
                (
                    f"{kind}: {texts[0][:30]!r}",
                    {"_hidden": hidden, "messages": [{"role": "user", "content": t} for t in texts]},
                )
            )
    for name, body in cases:
        hidden = body.pop("_hidden", HIDDEN)
        resp = httpx.post(url, json={"model": "openai/gpt-4o-mini", **body}, headers={"Authorization": f"Bearer {key}"})
        assert resp.status_code == 200, (name, resp.text)
        if hidden in upstream_saw(fake_openai) or hidden in resp.text:
            leaks.append(name)
    assert not leaks, f"{len(leaks)} of {len(cases)} reached the upstream: {leaks}"
    assert len(cases) >= 40


def test_a_secret_spelled_one_character_per_chunk_does_not_reach_the_client(chart_stack: Stack) -> None:
    client = openai.OpenAI(
        base_url=f"{chart_stack.gateway_url}/v1", api_key=chart_stack.create_key("stream"), max_retries=0
    )
    for _ in range(3):
        stream = client.chat.completions.create(
            model="openai/gpt-leaky-chars", stream=True, messages=[{"role": "user", "content": "tell me"}]
        )
        chunks = [c for c in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert "REDACTED" in text and LEAKED not in text and LEAKED[4:12] not in text, text
        assert "Echo from gpt-leaky-chars: tell me" in text  # the rest arrives whole
        assert chunks[-1].choices[0].finish_reason == "stop"


def test_async_job_requests_are_stored_scrubbed(chart_stack: Stack) -> None:
    key = chart_stack.create_key("jobs")
    body = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": f"use {KEY}"}]}
    resp = httpx.post(
        f"{chart_stack.gateway_url}/v1/async/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=body
    )
    assert resp.status_code == 202
    job_id = resp.json()["job_id"]

    def ended() -> dict[str, Any] | None:
        job = httpx.get(
            f"{chart_stack.gateway_url}/v1/async/chat/completions/{job_id}", headers={"Authorization": f"Bearer {key}"}
        ).json()
        return job if job["status"] in ("completed", "failed") else None

    job = wait_for(ended, timeout=60, interval=0.2, what="the job to end")
    assert job["status"] == "completed", job
    stored = _stored(chart_stack)
    assert stored and not any(HIDDEN.encode() in v for v in stored)
