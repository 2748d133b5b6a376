"""The stream scrubber on its own: secrets spelled one character per chunk are redacted, clean chunks pass
as the very bytes that came, and nothing of the text is lost or reordered."""

from __future__ import annotations

import orjson
import pytest

from iir_common.secret_scrubber import SecretScrubber
from iir_gateway.answer import Event
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


def relay(pieces: list[str]) -> tuple[str, list[bytes]]:
    """The text that arrives, and the bytes of each event sent on."""
    scrubber = StreamScrubber(SecretScrubber(), lambda found: None)
    out = [e for p in pieces for e in scrubber.feed(event(p))]
    out += scrubber.feed(event("", "stop")) + scrubber.flush()
    text = ""
    for e in out:
        for choice in orjson.loads(e.raw)["choices"]:
            text += choice.get("delta", {}).get("content") or ""
    return text, [e.raw for e in out]


@pytest.mark.parametrize(("secret", "hidden"), SECRETS)
def test_a_secret_spelled_per_character_is_redacted(secret: str, hidden: str) -> None:
    text, _ = relay(list(f"Here it is: {secret} — keep it safe."))
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
