"""Secret scrubbing of request bodies (before they leave for an upstream) and of answers (before they
leave the gateway). Mode per key, else `IIR_SCRUB_MODE`: `redact` (default), `block` (400 naming the
kinds found), `off`. The kinds found are counted and returned in `x-iir-scrubbed`, never the values.

Every string of a request body is scrubbed (messages, names, tool descriptions and schemas, `user`,
`metadata`, `stop`, URLs), together, so a key split across two of them is found too; text carried in a
`data:` URL is decoded and scrubbed. Only fields that name things the gateway routes on are left alone.
"""

from __future__ import annotations

import base64
import binascii
import copy
from typing import Any

from iir_common.secret_scrubber import SecretScrubber
from iir_gateway.errors import APIError
from iir_gateway.metrics import GatewayMetrics
from iir_gateway.scrubbing.stream import StreamScrubber

MODES = ("redact", "block", "off")
# Values that are identifiers or enumerations, not text a user wrote.
_STRUCTURAL = frozenset(
    {
        "model",
        "role",
        "type",
        "tool_call_id",
        "encoding_format",
        "finish_reason",
        "reasoning_effort",
        "service_tier",
        "detail",
        "format",
    }
)
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


def _places(node: Any, out: list[_Place]) -> None:
    """Every scrubbable string under `node`, in document order."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        if isinstance(value, str):
            if key in _STRUCTURAL and isinstance(node, dict):
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
            _places(value, out)


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
        """An answer's bytes with their secrets redacted."""
        scrubbed, found = self.scrubber.scrub_bytes(data)
        self.count_answer(found)
        return scrubbed, found

    def count_answer(self, found: set[str]) -> None:
        for kind in found:
            self.metrics.secrets.labels(kind, "response").inc()

    def stream(self) -> StreamScrubber:
        """A scrubber for one streamed answer (secrets spelled over many chunks are caught)."""
        return StreamScrubber(self.scrubber, self.count_answer)
