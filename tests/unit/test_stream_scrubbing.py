"""The stream scrubber on its own: secrets spelled one character per chunk are redacted, clean chunks pass
as the very bytes that came, and nothing of the text is lost or reordered."""

from __future__ import annotations

import orjson
import pytest

from iir_common.secret_scrubber import SecretScrubber
from iir_gateway.answer import _UNPARSED, Event
from iir_gateway.scrubbing.stream import StreamScrubber

# (secret, what of it must not arrive)
SECRETS = [
    ("sk-proj-AbC12dEf34GhI56jKl78mNo90pQr12StU34vWx56Yz78aB", "Yz78aB"),
    ("AKIAQ7RTX2EXAMPL3KEY", "EXAMPL3"),
    ("ghp_R4nd0mT0k3nAbCdEf1234567890GhIjKlMnOp", "GhIjKl"),
    ("password: Tr0ub4dor!3x", "Tr0ub4"),
    ("postgres://app:s3cr3tpass@db:5432/app", "s3cr3t"),
    ("iir-3mFq9ZtYx7LpWc2RvKd8BnHs5JgTe0UaQiOy4XfE", "QiOy4"),
]


def event(text: str, finish: str | None = None) -> Event:
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}],
    }
    return Event(orjson.dumps(chunk))


def relay(pieces: list[str], batch: int = 1) -> tuple[str, list[bytes]]:
    """The text that arrives, and the bytes of each event sent on (`batch` events per upstream read)."""
    scrubber = StreamScrubber(SecretScrubber(), lambda found: None)
    events = [event(p) for p in pieces]
    out = [e for i in range(0, len(events), batch) for e in scrubber.feed_all(events[i : i + batch])]
    out += [*scrubber.feed(event("", "stop")), *scrubber.flush()]
    text = ""
    for e in out:
        for choice in orjson.loads(e.raw)["choices"]:
            text += choice.get("delta", {}).get("content") or ""
    return text, [e.raw for e in out]


@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize(("secret", "hidden"), SECRETS)
def test_a_secret_spelled_per_character_is_redacted(secret: str, hidden: str, batch: int) -> None:
    text, _ = relay(list(f"Here it is: {secret} — keep it safe."), batch)
    assert "REDACTED" in text and hidden not in text, text
    assert text.startswith("Here it is: ") and text.endswith(" — keep it safe."), text


def test_clean_chunks_pass_unchanged_and_whole() -> None:
    words = "The order left the warehouse yesterday and should arrive on Friday morning".split(" ")
    pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
    text, out = relay(pieces)
    assert text == " ".join(words)
    assert out[: len(pieces)] == [event(p).raw for p in pieces]  # the same bytes: nothing re-encoded


def test_text_held_for_a_prose_needle_is_released_in_order() -> None:
    text, _ = relay(["Choose a ", "password", " that is ", "long", " and ", "unique", " for ", "each", " site", "."])
    assert text == "Choose a password that is long and unique for each site."


def raw_event(escaped: bytes) -> Event:
    """A text event whose content is `escaped` as it stands in the JSON (escapes kept as written)."""
    return Event(
        b'{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,'
        b'"delta":{"content":"' + escaped + b'"},"finish_reason":null}]}'
    )


def text_of(events: list[Event]) -> str:
    return "".join(
        c.get("delta", {}).get("content") or "" for e in events for c in orjson.loads(e.raw).get("choices", [])
    )


@pytest.mark.parametrize("batch", [1, 4])
def test_plain_text_events_pass_unparsed_after_the_first(batch: int) -> None:
    scrubber = StreamScrubber(SecretScrubber(), lambda found: None)
    events = [event(" word") for _ in range(12)]
    out = [e for i in range(0, 12, batch) for e in scrubber.feed_all(events[i : i + batch])]
    assert out == events  # the very objects
    assert all(e._data is _UNPARSED for e in events[1:])  # learnt from the first, the others read as bytes


@pytest.mark.parametrize("batch", [1, 6])
def test_a_secret_written_with_json_escapes_is_redacted(batch: int) -> None:
    # `sk-proj-…` with its letters as \u escapes, one escape per event: only decoding sees the needle.
    secret = "sk-proj-AbC12dEf34GhI56jKl78mNo90pQr12StU34vWx56Yz78aB"
    pieces = [b"Here: "] + [b"\\u%04x" % ord(c) for c in secret] + [rb" ok\n\"done\""]
    scrubber = StreamScrubber(SecretScrubber(), lambda found: None)
    events = [event(" start")] + [raw_event(p) for p in pieces]
    out = [e for i in range(0, len(events), batch) for e in scrubber.feed_all(events[i : i + batch])]
    out += [*scrubber.feed(event("", "stop")), *scrubber.flush()]
    text = text_of(out)
    assert "REDACTED" in text and "Yz78aB" not in text, text
    assert text.startswith(" startHere: ") and text.endswith(' ok\n"done"'), text


def test_an_event_that_only_looks_like_the_skeleton_is_parsed() -> None:
    # The prefix and suffix of a plain event around another field: the secret in it is still found.
    scrubber = StreamScrubber(SecretScrubber(), lambda found: None)
    assert scrubber.feed_all([event(" hello"), event(" there")])
    forged = raw_event(b' x","refusal":"ghp_R4nd0mT0k3nAbCdEf1234567890GhIjKlMnOp", "y":"')
    out = scrubber.feed_all([event(" a"), forged, event(" b")])
    assert b"GhIjKl" not in b"".join(e.raw for e in out)


def test_one_read_of_mixed_events_keeps_text_and_order() -> None:
    scrubber = StreamScrubber(SecretScrubber(), lambda found: None)
    role = Event(
        b'{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,'
        b'"delta":{"role":"assistant","content":""},"finish_reason":null}]}'
    )
    usage = Event(b'{"id":"c","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":9}}')
    pieces = ["The", " pass", "word", ":", " hunter22", "!", " Bye", "."]
    out = [*scrubber.feed_all([role, *[event(p) for p in pieces], event("", "stop"), usage])]
    out += scrubber.flush()
    assert text_of(out) == "The password: REDACTED Bye.", text_of(out)
    assert out[-1].raw == usage.raw


def test_this_process_s_own_secret_in_a_plain_event_is_redacted() -> None:
    # An environment secret has no needle: the fast path looks for the literal itself.
    literal = "Zq8-local-only-value-7fK2pW"
    scrubber = StreamScrubber(SecretScrubber([literal]), lambda found: None)
    events = [event(" hello"), event(" there"), event(f" {literal} "), event(" bye")]
    out = [*scrubber.feed_all(events[:2]), *scrubber.feed_all(events[2:])]
    assert literal not in text_of(out) and "REDACTED" in text_of(out), text_of(out)


def _with_logprobs(text: str) -> Event:
    raw = orjson.loads(event(text).raw)
    entry = {"token": text, "logprob": -0.1, "bytes": list(text.encode()), "top_logprobs": []}
    raw["choices"][0]["logprobs"] = {"content": [entry]}
    return Event(orjson.dumps(raw))


def test_logprobs_never_spell_what_the_text_holds_back_or_masks() -> None:
    secret = SECRETS[0][0]
    scrubber = StreamScrubber(SecretScrubber(), lambda found: None)
    out = [e for piece in f"Key: {secret} ok".split(" ") for e in scrubber.feed(_with_logprobs(piece + " "))]
    out += [*scrubber.feed(event("", "stop")), *scrubber.flush()]
    tokens = ""
    for e in out:
        for choice in orjson.loads(e.raw)["choices"]:
            for entry in (choice.get("logprobs") or {}).get("content") or []:
                tokens += entry["token"]
    assert "Key: " in tokens and SECRETS[0][1] not in tokens, tokens  # clean tokens keep their logprobs


def test_a_whole_answer_that_held_a_secret_loses_its_logprobs() -> None:
    from iir_gateway.metrics import GatewayMetrics
    from iir_gateway.scrubbing.policy import Scrubbing

    secret = SECRETS[0][0]
    tokens = ["Key", ": ", secret[:10], secret[10:]]
    entries = [{"token": t, "logprob": -0.1, "bytes": list(t.encode()), "top_logprobs": []} for t in tokens]
    choice = {"index": 0, "message": {"role": "assistant", "content": "".join(tokens)}, "finish_reason": "stop"}
    answer = {"id": "c", "object": "chat.completion", "choices": [{**choice, "logprobs": {"content": entries}}]}
    policy = Scrubbing(SecretScrubber(), "mask", GatewayMetrics())
    scrubbed, found = policy.answer(orjson.dumps(answer))
    assert found and SECRETS[0][1].encode() not in scrubbed
    assert orjson.loads(scrubbed)["choices"][0]["logprobs"] is None
    kept = {**choice, "message": {"role": "assistant", "content": "Key: none"}, "logprobs": {"content": entries[:2]}}
    clean = {**answer, "choices": [kept]}
    assert orjson.loads(policy.answer(orjson.dumps(clean))[0])["choices"][0]["logprobs"]["content"] == entries[:2]
