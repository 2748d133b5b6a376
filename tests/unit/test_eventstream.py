"""AWS's binary event stream framing (Bedrock's converse-stream): messages cut anywhere by the network,
headers of every value type, exceptions, and corruption (a CRC that does not match ends the stream)."""

from __future__ import annotations

import struct
import uuid
import zlib

import orjson

from iir_gateway.wire.eventstream import EventStreamParser, parse_headers
from tests.fakes.bedrock_runtime import event, event_message, exception


def _typed_header(name: str, kind: int, value: bytes) -> bytes:
    return bytes([len(name)]) + name.encode() + bytes([kind]) + value


def test_payloads_come_out_named_by_their_event_type_however_the_bytes_are_cut() -> None:
    stream = event("messageStart", {"role": "assistant"}) + event("contentBlockDelta", {"delta": {"text": "Hi"}})
    for cut in range(len(stream) + 1):
        parser = EventStreamParser()
        payloads = parser.feed(stream[:cut]) + parser.feed(stream[cut:]) + parser.flush()
        decoded = [orjson.loads(p) for p in payloads]
        assert [next(iter(d)) for d in decoded] == ["messageStart", "contentBlockDelta"], cut
        assert decoded[1]["contentBlockDelta"]["delta"] == {"text": "Hi"}
    parser = EventStreamParser()
    assert len([p for byte in stream for p in parser.feed(bytes([byte]))]) == 2  # one byte at a time


def test_headers_of_every_type_are_read_past() -> None:
    headers = (
        _typed_header("bool-true", 0, b"")
        + _typed_header("bool-false", 1, b"")
        + _typed_header("byte", 2, b"\x01")
        + _typed_header("short", 3, struct.pack(">h", 2))
        + _typed_header("int", 4, struct.pack(">i", 3))
        + _typed_header("long", 5, struct.pack(">q", 4))
        + _typed_header("bytes", 6, struct.pack(">H", 3) + b"abc")
        + _typed_header("time", 8, struct.pack(">q", 1_700_000_000_000))
        + _typed_header("uuid", 9, uuid.uuid4().bytes)
        + _typed_header(":event-type", 7, struct.pack(">H", 8) + b"metadata")
    )
    assert parse_headers(headers) == {":event-type": "metadata"}
    payload = b'{"usage":{"inputTokens":1}}'
    prelude = struct.pack(">II", 12 + len(headers) + len(payload) + 4, len(headers))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + headers + payload
    message += struct.pack(">I", zlib.crc32(message))
    assert EventStreamParser().feed(message) == [b'{"metadata":{"usage":{"inputTokens":1}}}']


def test_exceptions_and_errors_become_exception_payloads() -> None:
    parser = EventStreamParser()
    [thrown] = parser.feed(exception("throttlingException", "slow down"))
    assert orjson.loads(thrown)["throttlingException"]["message"] == "slow down"
    error = event_message({":message-type": "error", ":error-code": "X", ":error-message": "broken"}, b"")
    assert orjson.loads(parser.feed(error)[0]) == {"internalServerException": {"message": "broken"}}


def test_corruption_ends_the_stream() -> None:
    good = event("messageStart", {"role": "assistant"})
    bad = bytearray(event("contentBlockDelta", {"delta": {"text": "x"}}))
    bad[-6] ^= 0xFF  # a payload byte: the message CRC no longer matches
    parser = EventStreamParser()
    payloads = parser.feed(good + bytes(bad) + good)
    assert len(payloads) == 2 and "internalServerException" in orjson.loads(payloads[1])
    assert parser.feed(good) == [] and parser.flush() == []  # nothing after it is trusted
    wrong_prelude = bytearray(good)
    wrong_prelude[9] ^= 0xFF
    assert "prelude" in EventStreamParser().feed(bytes(wrong_prelude))[0].decode()
    cut = EventStreamParser()
    assert cut.feed(good[:-3]) == [] and "ended inside a message" in cut.flush()[0].decode()
