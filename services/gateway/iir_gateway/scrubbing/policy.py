"""Secret scrubbing of request bodies (before they leave for an upstream) and of answers (before they
leave the gateway). Mode per key, else `IIR_SCRUB_MODE`: `redact` (default), `block` (400 naming the
kinds found), `off`. The kinds found are counted and returned in `x-iir-scrubbed`, never the values.

Every string of a request body is scrubbed (messages, names, tool descriptions and schemas, `user`,
`metadata`, `stop`, URLs), together, so a key split across two of them is found too; text carried in a
`data:` URL is decoded and scrubbed. Only fields that name things the gateway routes on are left alone.
What the gateway keeps of a request (a stored Response, a batch input file) is scrubbed the same way.
"""

from __future__ import annotations

import base64
import binascii
import copy
import re
from collections.abc import Iterator
from typing import Any

import orjson

from iir_common.secret_scrubber import SecretScrubber
from iir_gateway.errors import APIError
from iir_gateway.metrics import GatewayMetrics
from iir_gateway.scrubbing.stream import StreamScrubber

# The body's own model name routes the request (any other string, an identifier or an enumeration
# included, may be where a client put a secret: `metadata.model`, a schema's `format`).
_ROUTING = frozenset({"model"})
# Lines of a batch file checked for needles at once (the clean slices of a large file cost one C pass).
_SLICE_BYTES = 1 << 20
# Media whose base64 payload is binary: scanning it could only corrupt it.
_BINARY_MEDIA = ("image/", "audio/", "video/", "application/pdf", "application/octet-stream")


class _Place:
    """One string of the body: where it is, and how to put a scrubbed version back."""

    __slots__ = ("container", "data_prefix", "key", "text")

    def __init__(self, container: Any, key: Any, text: str, data_prefix: str = "") -> None:
        self.container, self.key, self.text, self.data_prefix = container, key, text, data_prefix

    def put(self, text: str) -> None:
        if self.data_prefix:  # a base64 data URL: encode the scrubbed text again
            text = self.data_prefix + base64.b64encode(text.encode("utf-8", "surrogateescape")).decode()
        self.container[self.key] = text


def _decoded_data_url(value: str) -> tuple[str, str] | None:
    """(prefix up to the payload, text) of a base64 `data:` URL holding text; None otherwise."""
    head, sep, payload = value.partition(",")
    if not sep or not head.endswith(";base64") or head[5:].startswith(_BINARY_MEDIA):
        return None
    try:
        return head + ",", base64.b64decode(payload, validate=True).decode("utf-8", "surrogateescape")
    except (binascii.Error, ValueError):
        return None


def _places(node: Any, out: list[_Place], top: bool = True) -> None:
    """Every scrubbable string under `node`, in document order."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        if isinstance(value, str):
            if top and key in _ROUTING and isinstance(node, dict):
                continue
            if value.startswith("data:"):
                decoded = _decoded_data_url(value)
                if decoded is not None:
                    out.append(_Place(node, key, decoded[1], decoded[0]))
                    continue
                if value[5:].startswith(_BINARY_MEDIA):
                    continue
            out.append(_Place(node, key, value))
        elif isinstance(value, dict | list):
            _places(value, out, top=False)


class Scrubbing:
    def __init__(self, scrubber: SecretScrubber, default_mode: str, metrics: GatewayMetrics) -> None:
        self.scrubber = scrubber
        self.default_mode = default_mode
        self.metrics = metrics

    def mode(self, key_mode: str) -> str:
        return key_mode or self.default_mode

    def request(self, body: dict[str, Any], mode: str) -> tuple[dict[str, Any], set[str]]:
        """The body with its strings redacted (a copy when a secret was found: the caller's body is never
        changed), and the kinds found; APIError 400 in block mode."""
        if mode == "off":
            return body, set()
        places: list[_Place] = []
        _places(body, places)
        scrubbed, found = self.scrubber.scrub_texts([p.text for p in places])
        for kind in found:
            self.metrics.secrets.labels(kind, "request").inc()
        if not found:
            return body, found
        if mode == "block":
            raise APIError(
                400,
                f"The request contains secrets ({', '.join(sorted(found))}); remove them and try again.",
                code="secret_detected",
                headers={"x-iir-scrubbed": ",".join(sorted(found))},
            )
        body = copy.deepcopy(body)
        places = []
        _places(body, places)  # the same strings in the same order, now in the copy
        for place, text in zip(places, scrubbed, strict=True):
            if text != place.text:
                place.put(text)
        return body, found

    def answer(self, data: bytes) -> tuple[bytes, set[str]]:
        """An answer's bytes with their secrets redacted; tool-call arguments are also matched decoded
        (in the raw bytes they are JSON inside a JSON string: `{\\"password\\": …}` escapes the quotes)."""
        found: set[str] = set()
        if b'"tool_calls"' in data and self.scrubber.may_hold_secret(data):
            data, found = self._tool_arguments(data)
        scrubbed, more = self.scrubber.scrub_bytes(data)
        found |= more
        if found and b'"logprobs"' in scrubbed:
            scrubbed = _without_logprobs(scrubbed)
        self.count_answer(found)
        return scrubbed, found

    def _tool_arguments(self, data: bytes) -> tuple[bytes, set[str]]:
        try:
            document = orjson.loads(data)
        except orjson.JSONDecodeError:
            return data, set()
        choices = document.get("choices") if isinstance(document, dict) else None
        found: set[str] = set()
        for choice in choices if isinstance(choices, list) else ():
            message = choice.get("message") if isinstance(choice, dict) else None
            calls = message.get("tool_calls") if isinstance(message, dict) else None
            for call in calls if isinstance(calls, list) else ():
                function = call.get("function") if isinstance(call, dict) else None
                arguments = function.get("arguments") if isinstance(function, dict) else None
                if isinstance(function, dict) and isinstance(arguments, str):
                    function["arguments"], kinds = self.scrubber.scrub(arguments)
                    found |= kinds
        return (orjson.dumps(document), found) if found else (data, found)

    def jsonl(self, content: bytes, mode: str, first_line: int = 1) -> tuple[bytes, set[str]]:
        """A JSONL file (a batch's input) with every line scrubbed as the request it holds is: each line
        that is a JSON object has its strings redacted (and is written again, compact), any other line is
        redacted as text; APIError 400 naming the line in block mode. Slices without a needle are kept
        as they are, without parsing; a clean file is returned as it came."""
        if mode == "off":
            return content, set()
        found: set[str] = set()
        parts: list[bytes] = []
        kept = 0  # content before this offset is in `parts`
        for start, end in _slices(content):
            if not _may_hold(self.scrubber, content[start:end]):
                continue
            for number, line_start, line_end in _lines(content, start, end, first_line):
                line = content[line_start:line_end]
                scrubbed, kinds = self._line(line, mode, number)
                if kinds:
                    found |= kinds
                    parts += [content[kept:line_start], scrubbed]
                    kept = line_end
        if not found:
            return content, found
        parts.append(content[kept:])
        return b"".join(parts), found

    def _line(self, line: bytes, mode: str, number: int) -> tuple[bytes, set[str]]:
        if not _may_hold(self.scrubber, line):
            return line, set()
        try:
            parsed = orjson.loads(line)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            try:
                body, found = self.request(parsed, mode)
            except APIError as exc:  # block mode
                raise _secret_in_line(number, exc.headers.get("x-iir-scrubbed", "")) from None
            return (orjson.dumps(body) if found else line), found
        scrubbed, found = self.scrubber.scrub_bytes(line)  # not a request: redacted as text
        for kind in found:
            self.metrics.secrets.labels(kind, "request").inc()
        if found and mode == "block":
            raise _secret_in_line(number, ",".join(sorted(found)))
        return scrubbed, found

    def count_answer(self, found: set[str]) -> None:
        for kind in found:
            self.metrics.secrets.labels(kind, "response").inc()

    def stream(self) -> StreamScrubber:
        """A scrubber for one streamed answer (secrets spelled over many chunks are caught)."""
        return StreamScrubber(self.scrubber, self.count_answer)


def _slices(content: bytes) -> Iterator[tuple[int, int]]:
    """(start, end) of about `_SLICE_BYTES` of `content` each, cut after a newline."""
    start = 0
    while start < len(content):
        end = content.find(b"\n", start + _SLICE_BYTES)
        end = len(content) if end < 0 else end + 1
        yield start, end
        start = end


def _may_hold(scrubber: SecretScrubber, raw: bytes) -> bool:
    """Whether JSON text may hold a secret: a needle in its bytes, or a `\\u` escape that could spell
    one (`\\u0067hp_…` is `ghp_…` once parsed)."""
    return b"\\u" in raw or scrubber.may_hold_secret(raw)


_BREAK = re.compile(rb"\r\n|\r|\n")


def line_breaks(content: bytes) -> int:
    """The line breaks in `content`: LF, CRLF and bare CR, as `bytes.splitlines` (the batch runner) reads."""
    return content.count(b"\n") + content.count(b"\r") - content.count(b"\r\n")


def _lines(content: bytes, start: int, end: int, first_line: int) -> Iterator[tuple[int, int, int]]:
    """(line number, start, end without its line break) of the lines of `content[start:end]` (the number
    is for the message only)."""
    number = line_breaks(content[:start]) + first_line
    for brk in _BREAK.finditer(content, start, end):
        yield number, start, brk.start()
        number += 1
        start = brk.end()
    if start < end:
        yield number, start, end


def _secret_in_line(number: int, kinds: str) -> APIError:
    return APIError(
        400,
        f"Line {number} of the file contains secrets ({kinds.replace(',', ', ')}); remove them and try again.",
        code="secret_detected",
        headers={"x-iir-scrubbed": kinds},
    )


def _without_logprobs(data: bytes) -> bytes:
    """An answer whose secrets were masked, without its choices' logprobs: their tokens, one by one, would
    spell what the text no longer shows."""
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return data
    for choice in document.get("choices") or () if isinstance(document, dict) else ():
        if isinstance(choice, dict) and choice.get("logprobs"):
            choice["logprobs"] = None
    return orjson.dumps(document)
