"""AWS's binary event stream framing (`application/vnd.amazon.eventstream`, Bedrock's `converse-stream`):
upstream bytes → the payloads of its messages, however the network cut them.

A message is a prelude (total length, headers length: big-endian u32 each), the prelude's CRC32, the
headers, the payload and the CRC32 of everything before it. A header is a name (u8 length, UTF-8), a
value type (u8) and a value. Each payload comes out wrapped in an object named by the message's
`:event-type` (events) or `:exception-type` (exceptions), as AWS's SDKs present them:
`{"contentBlockDelta": {...}}`. A message whose CRC does not match ends the stream with an
`internalServerException` payload (the bytes after it cannot be trusted).
"""

from __future__ import annotations

import struct
import zlib

import orjson

PRELUDE = 12  # total length, headers length, prelude CRC
MAX_MESSAGE = 16 * 1024 * 1024 + 1024
# Value types and their fixed sizes (-1: a u16 length then that many bytes).
_SIZES = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 6: -1, 7: -1, 8: 8, 9: 16}


def _corrupt(why: str) -> bytes:
    return orjson.dumps({"internalServerException": {"message": f"The event stream is corrupt: {why}."}})


def parse_headers(data: bytes) -> dict[str, str]:
    """The string-valued headers of a message (the only kind its routing needs); ValueError when malformed."""
    headers: dict[str, str] = {}
    i = 0
    while i < len(data):
        size = data[i]
        name = data[i + 1 : i + 1 + size].decode()
        i += 1 + size
        kind = data[i]
        i += 1
        width = _SIZES.get(kind)
        if width is None:
            raise ValueError(f"unknown header value type {kind}")
        if width < 0:
            (length,) = struct.unpack_from(">H", data, i)
            value = data[i + 2 : i + 2 + length]
            i += 2 + length
            if kind == 7:
                headers[name] = value.decode()
        else:
            i += width
        if i > len(data):
            raise ValueError("a header runs past the headers")
    return headers


class EventStreamParser:
    """Splits a byte stream into its messages' payloads (a `wire.base.Framing`)."""

    __slots__ = ("_broken", "_buffer")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._broken = False

    def feed(self, chunk: bytes) -> list[bytes]:
        if self._broken:
            return []
        buffer = self._buffer
        buffer += chunk
        out: list[bytes] = []
        while len(buffer) >= PRELUDE:
            total, headers_length, prelude_crc = struct.unpack_from(">III", buffer)
            if zlib.crc32(bytes(buffer[:8])) != prelude_crc:
                return self._break(out, "the prelude's CRC does not match")
            if not PRELUDE + headers_length + 4 <= total <= MAX_MESSAGE:
                return self._break(out, "a message has an impossible length")
            if len(buffer) < total:
                break
            message = bytes(buffer[:total])
            del buffer[:total]
            (message_crc,) = struct.unpack_from(">I", message, total - 4)
            if zlib.crc32(message[:-4]) != message_crc:
                return self._break(out, "a message's CRC does not match")
            try:
                headers = parse_headers(message[PRELUDE : PRELUDE + headers_length])
            except (ValueError, IndexError, struct.error, UnicodeDecodeError):
                return self._break(out, "a message's headers are malformed")
            payload = message[PRELUDE + headers_length : -4] or b"{}"
            kind = headers.get(":message-type", "event")
            if kind == "event":
                name = headers.get(":event-type", "")
            elif kind == "exception":
                name = headers.get(":exception-type", "internalServerException")
            else:  # "error": its code and message are headers
                name = "internalServerException"
                payload = orjson.dumps({"message": headers.get(":error-message") or headers.get(":error-code", "")})
            out.append(b"{" + orjson.dumps(name) + b":" + payload + b"}")
        return out

    def _break(self, out: list[bytes], why: str) -> list[bytes]:
        self._broken = True
        self._buffer.clear()
        out.append(_corrupt(why))
        return out

    def flush(self) -> list[bytes]:
        """An error payload when the stream ended inside a message."""
        if self._broken or not self._buffer:
            return []
        self._buffer.clear()
        return [_corrupt("it ended inside a message")]
