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
    order: list[str | int] = []
    got: dict[int, str] = {}
    for data in relay(events):
        for choice in data["choices"]:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                order.append("text")
            for call in delta.get("tool_calls") or []:
                order.append(call["index"])
                got[call["index"]] = got.get(call["index"], "") + call["function"]["arguments"]
    assert order == sorted(order, key=lambda x: -1 if x == "text" else int(x))
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


def _arguments(data: list[dict[str, Any]]) -> tuple[dict[int, str], str]:
    """Each call's arguments and all the text (content and refusal) of a relayed stream."""
    got: dict[int, str] = {}
    text = ""
    for event in data:
        for choice in event["choices"]:
            delta = choice.get("delta") or {}
            text += (delta.get("content") or "") + (delta.get("refusal") or "")
            for call in delta.get("tool_calls") or []:
                got[call["index"]] = got.get(call["index"], "") + call["function"].get("arguments", "")
    return got, text


@pytest.mark.parametrize("size", [1, 3, 11, 25])
def test_parallel_calls_taking_turns_never_carry_a_secret_in_two_halves(size: int) -> None:
    """A third review: call 0 held `{"token": "ghp_A1b2…`, call 1 sent a piece, call 0's held text went
    out as it was and the rest of the secret followed untouched."""
    secret = SECRETS["token"]
    first, second = json.dumps({"token": secret}), json.dumps({"q": "x", "token": secret})
    events = []
    for s in range(0, max(len(first), len(second)), size):
        events.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": first[s : s + size]}}]}))
        events.append(chunk({"tool_calls": [{"index": 1, "function": {"arguments": second[s : s + size]}}]}))
    both = [  # two calls in one chunk, each a half
        {"index": i, "function": {"arguments": part}} for i, part in enumerate((first[:20], first[:20]))
    ]
    rest = [{"index": i, "function": {"arguments": first[20:]}} for i in range(2)]
    for stream in (events, [chunk({"tool_calls": both}), chunk({"tool_calls": rest})]):
        got, _ = _arguments(relay([*stream, chunk({}, "tool_calls")]))
        for arguments in got.values():
            assert secret[4:16] not in arguments and secret[-12:] not in arguments, got
            json.loads(arguments)  # still JSON


def test_a_secret_cut_by_the_first_tool_call_leaves_in_neither_part() -> None:
    secret = SECRETS["token"]
    events = [chunk({"content": "key: " + secret[:20]}), chunk({"tool_calls": [{"index": 0, "function": {}}]})]
    events.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": secret[20:] + '"}'}}]}))
    got, text = _arguments(relay([*events, chunk({}, "tool_calls")]))
    assert secret[4:20] not in text and secret[20:] not in got.get(0, ""), (text, got)


def test_a_refusal_spelled_over_chunks_is_held_like_text() -> None:
    secret = SECRETS["token"]
    events = [
        chunk({"refusal": "key " + secret[: i + 1][-1:]}) if i == 0 else chunk({"refusal": c})
        for i, c in enumerate(secret)
    ]
    _, text = _arguments(relay([*events, chunk({}, "stop")]))
    assert secret not in text and secret[-12:] not in text, text


def test_identifier_fields_below_the_top_are_scrubbed_too() -> None:
    """`metadata.model`, a schema's `format`, `tool_call_id`: only the body's own `model` routes."""
    secret = SECRETS["token"]
    scrubbing = Scrubbing(SecretScrubber(), "redact", GatewayMetrics())
    body = {
        "model": "m",
        "metadata": {"model": secret, "type": secret},
        "text": {"format": {"type": "json_schema", "schema": {"properties": {"a": {"format": secret}}}}},
        "messages": [{"role": "tool", "tool_call_id": secret, "content": "ok"}],
    }
    scrubbed, found = scrubbing.request(body, "redact")
    assert found and secret not in json.dumps(scrubbed) and scrubbed["model"] == "m"


def test_a_batch_line_spelling_a_secret_with_json_escapes_is_scrubbed() -> None:
    secret = SECRETS["token"]
    line = '{"custom_id":"a","body":{"messages":[{"role":"user","content":"\\u0067' + secret[1:] + '"}]}}\n'
    scrubbing = Scrubbing(SecretScrubber(), "redact", GatewayMetrics())
    scrubbed, found = scrubbing.jsonl(line.encode(), "redact")
    assert found and secret not in json.dumps(json.loads(scrubbed)), scrubbed
