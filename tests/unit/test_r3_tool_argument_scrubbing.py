"""Tool-call arguments through the stream scrubber (held across chunks, one holder per call, order and
JSON kept), redactions that never cut a JSON escape, and batch files scrubbed line by line."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import orjson
import pytest

from iir_common.secret_scrubber import SecretScrubber
from iir_gateway.answer import Event
from iir_gateway.batches.scrubbed_upload import ScrubbedLines
from iir_gateway.errors import APIError
from iir_gateway.metrics import GatewayMetrics
from iir_gateway.scrubbing.policy import Scrubbing
from iir_gateway.scrubbing.stream import StreamScrubber

SECRETS = {
    "token": "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
    "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "password": "Tr0ub4dor!3x",
}


def chunk(delta: dict[str, Any], finish: str | None = None) -> Event:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return Event(
        orjson.dumps({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [choice]})
    )


def relay(events: list[Event]) -> list[dict[str, Any]]:
    scrubber = StreamScrubber(SecretScrubber(), lambda found: None)
    out = [e for ev in events for e in scrubber.feed(ev)] + scrubber.flush()
    return [e.json() for e in out]


@pytest.mark.parametrize("size", range(1, 7))
@pytest.mark.parametrize("finish", [True, False])
def test_arguments_are_held_per_call_and_released_in_order(size: int, finish: bool) -> None:
    calls = [json.dumps({name: value, "q": 'a "b" c'}) for name, value in SECRETS.items()]
    events = [chunk({"content": "my password is"})]  # held text goes out before the first call
    for i, arguments in enumerate(calls):
        events.append(chunk({"tool_calls": [{"index": i, "id": f"c{i}", "function": {"name": "f", "arguments": ""}}]}))
        events += [
            chunk({"tool_calls": [{"index": i, "function": {"arguments": arguments[s : s + size]}}]})
            for s in range(0, len(arguments), size)
        ]
    if finish:
        events.append(chunk({}, "tool_calls"))
    order: list[object] = []
    got: dict[int, str] = {}
    for data in relay(events):
        for choice in data["choices"]:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                order.append("text")
            for call in delta.get("tool_calls") or []:
                order.append(call["index"])
                got[call["index"]] = got.get(call["index"], "") + call["function"]["arguments"]
    assert order == sorted(order, key=lambda x: -1 if x == "text" else int(x))  # type: ignore[arg-type]
    for i, (name, value) in enumerate(SECRETS.items()):
        assert value not in got[i] and value[4:] not in got[i], got[i]
        assert json.loads(got[i])["q"] == 'a "b" c' and "REDACTED" in json.loads(got[i])[name]


def test_a_chunk_without_tool_calls_is_relayed_as_it_came() -> None:
    scrubber = StreamScrubber(SecretScrubber(), lambda found: None)
    clean = chunk({"content": "hello there"})
    assert scrubber.feed(clean)[0] is clean
    assert not scrubber.calls


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ('{"c":"password=abc123\\"x"}', '\\"x"'),  # the backslash of `\"` after the secret stays
        ('{"a":"\\/AKIAIOSFODNN7EXAMPLE"}', '"\\/REDACTED"'),  # an escaped first character stays escaped
    ],
)
def test_a_redaction_never_cuts_a_json_escape(text: str, kept: str) -> None:
    out, found = SecretScrubber().scrub(text)
    assert found and kept in out
    json.loads(out)


def test_batch_files_are_scrubbed_line_by_line_and_refused_in_block_mode() -> None:
    scrubbing = Scrubbing(SecretScrubber(), "redact", GatewayMetrics())
    token = SECRETS["token"]
    line = json.dumps({"custom_id": "a", "body": {"messages": [{"role": "user", "content": f"use {token}"}]}})
    content = ("\n".join(['{"custom_id": "clean"}'] * 3 + [line, f"not json {token}"]) + "\n").encode()
    stored: list[bytes] = []

    async def sink(data: bytes) -> None:
        stored.append(data)

    async def upload(mode: str) -> ScrubbedLines:
        lines = ScrubbedLines(scrubbing, mode, sink)
        for start in range(0, len(content), 7):  # pieces that cut lines anywhere
            await lines.write(content[start : start + 7])
        await lines.close()
        return lines

    lines = asyncio.run(upload("redact"))
    whole = b"".join(stored)
    assert token.encode() not in whole and whole.count(b"REDACTED") == 2 and lines.found == {"github_token"}
    assert whole.startswith(b'{"custom_id": "clean"}\n' * 3)  # clean lines are kept as they came
    with pytest.raises(APIError) as refused:
        asyncio.run(upload("block"))
    assert refused.value.status == 400 and "Line 4" in refused.value.message
