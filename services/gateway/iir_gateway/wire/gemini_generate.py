"""Gemini's `generateContent` API (on Vertex AI: `…/publishers/google/models/{model}:generateContent`,
streams from `:streamGenerateContent?alt=sse`): chat requests translated both ways (mappings in
`gemini_request`, `gemini_response`, `gemini_stream`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from iir_gateway.answer import Event
from iir_gateway.errors import APIError
from iir_gateway.wire.gemini_request import to_gemini
from iir_gateway.wire.gemini_response import from_gemini
from iir_gateway.wire.gemini_stream import GeminiStreamDecoder
from iir_gateway.wire.sse import SSEParser


class GeminiCodec:
    kind = "gemini"
    native_kind = "gemini"

    def encode_request(self, endpoint: str, body: Mapping[str, Any], model: str, stream: bool) -> tuple[str, bytes]:
        if endpoint != "chat/completions":
            raise APIError(
                400, f"`{body.get('model')}` (Gemini) supports only /v1/chat/completions.", code="unsupported_endpoint"
            )
        path = f"{model}:streamGenerateContent?alt=sse" if stream else f"{model}:generateContent"
        return path, orjson.dumps(to_gemini(dict(body)))

    def decode_response(self, raw: bytes) -> Event | None:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        return Event.of(from_gemini(data)) if isinstance(data, dict) else None

    def stream_decoder(self, keep_native: bool = False) -> GeminiStreamDecoder:
        return GeminiStreamDecoder()

    def encode_native(self, body: Mapping[str, Any], model: str, stream: bool) -> tuple[str, bytes]:
        return self.encode_request("chat/completions", body, model, stream)  # no client speaks Gemini's API here

    def framing(self) -> SSEParser:
        return SSEParser()
