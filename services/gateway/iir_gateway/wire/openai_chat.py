"""OpenAI's own format (vLLM and every OpenAI-compatible server): requests pass with the upstream's
model name, answers pass as the bytes that came; only the usage is read on the way."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from iir_gateway.answer import Event
from iir_gateway.wire.sse import DONE, SSEParser


class OpenAIStreamDecoder:
    __slots__ = ("done", "usage")

    def __init__(self) -> None:
        self.usage: dict[str, Any] | None = None
        self.done = False

    def decode(self, payload: bytes) -> list[Event]:
        return self.decode_all([payload])

    def decode_all(self, payloads: list[bytes]) -> list[Event]:
        if payloads and payloads[-1] == DONE:  # it ends the stream: nothing comes after it
            self.done = True
            payloads = payloads[:-1]
        events = list(map(Event, payloads))
        for event in events[-2:]:  # the usage event comes last (before [DONE])
            if b'"usage"' in event.raw:
                usage = event.json().get("usage")
                if isinstance(usage, dict):
                    self.usage = usage
        return events


class OpenAIChatCodec:
    kind = "openai"
    native_kind = "openai"

    def encode_request(self, endpoint: str, body: Mapping[str, Any], model: str, stream: bool) -> tuple[str, bytes]:
        out = {**body, "model": model}
        if stream:  # usage is needed to account for every stream; the pipeline hides it if not asked for
            out["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        return endpoint, orjson.dumps(out)

    def decode_response(self, raw: bytes) -> Event | None:
        event = Event(raw)
        return event if isinstance(event.data, dict) else None

    def stream_decoder(self, keep_native: bool = False) -> OpenAIStreamDecoder:
        return OpenAIStreamDecoder()  # its events are OpenAI's own bytes already

    def encode_native(self, body: Mapping[str, Any], model: str, stream: bool) -> tuple[str, bytes]:
        return self.encode_request("chat/completions", body, model, stream)

    def framing(self) -> SSEParser:
        return SSEParser()
