"""Secret scrubbing of request bodies (before they leave for an upstream) and of answers (before they
leave the gateway). Mode per key, else `IIR_SCRUB_MODE`: `redact` (default), `block` (400 naming the
kinds found), `off`. The kinds found are counted and returned in `x-iir-scrubbed`, never the values.
"""

from __future__ import annotations

from typing import Any

from iir_common.secret_scrubber import SecretScrubber
from iir_gateway.errors import APIError
from iir_gateway.metrics import GatewayMetrics

MODES = ("redact", "block", "off")


def _texts(body: dict[str, Any]) -> list[tuple[Any, Any]]:
    """(container, key) of every prompt string in an OpenAI request body."""
    places: list[tuple[Any, Any]] = []
    messages = body.get("messages")
    if isinstance(messages, list):
        for m in messages:
            if not isinstance(m, dict):
                continue
            content = m.get("content")
            if isinstance(content, str):
                places.append((m, "content"))
            elif isinstance(content, list):
                places += [(p, "text") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
            for call in m.get("tool_calls") or []:
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                    places.append((function, "arguments"))
    for key in ("prompt", "input"):
        value = body.get(key)
        if isinstance(value, str):
            places.append((body, key))
        elif isinstance(value, list):
            places += [(value, i) for i, v in enumerate(value) if isinstance(v, str)]
    return places


class Scrubbing:
    def __init__(self, scrubber: SecretScrubber, default_mode: str, metrics: GatewayMetrics) -> None:
        self.scrubber = scrubber
        self.default_mode = default_mode
        self.metrics = metrics

    def mode(self, key_mode: str) -> str:
        return key_mode or self.default_mode

    def request(self, body: dict[str, Any], mode: str) -> set[str]:
        """Redacts the body's prompts in place (or raises 400 in block mode); returns the kinds found."""
        if mode == "off":
            return set()
        found: set[str] = set()
        for container, key in _texts(body):
            if mode == "block":
                found |= self.scrubber.find(container[key])
            else:
                container[key], kinds = self.scrubber.scrub(container[key])
                found |= kinds
        for kind in found:
            self.metrics.secrets.labels(kind, "request").inc()
        if found and mode == "block":
            raise APIError(400, f"The request contains secrets ({', '.join(sorted(found))}); remove them and try "
                           "again.", code="secret_detected", headers={"x-iir-scrubbed": ",".join(sorted(found))})
        return found

    def answer(self, data: bytes) -> tuple[bytes, set[str]]:
        """An answer's bytes with their secrets redacted."""
        scrubbed, found = self.scrubber.scrub_bytes(data)
        for kind in found:
            self.metrics.secrets.labels(kind, "response").inc()
        return scrubbed, found
