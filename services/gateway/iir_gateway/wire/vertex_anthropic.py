"""Claude on Google Vertex AI: Anthropic's Messages API behind Vertex's `rawPredict` (whole answers) and
`streamRawPredict` (SSE), https://docs.anthropic.com/en/api/claude-on-vertex-ai. The body is a Messages
request without `model` (the URL names it) and with `anthropic_version: vertex-2023-10-16`; answers and
streams are Anthropic's, translated as for Anthropic's own API."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from iir_gateway.answer import Event
from iir_gateway.errors import APIError
from iir_gateway.wire.anthropic_messages import NATIVE_FIELDS
from iir_gateway.wire.anthropic_request import to_anthropic
from iir_gateway.wire.anthropic_response import from_anthropic
from iir_gateway.wire.anthropic_stream import AnthropicStreamDecoder
from iir_gateway.wire.sse import SSEParser

VERTEX_ANTHROPIC_VERSION = "vertex-2023-10-16"


def _path(model: str, stream: bool) -> str:
    return f"{model}:streamRawPredict" if stream else f"{model}:rawPredict"


class VertexAnthropicCodec:
    kind = "vertex-anthropic"
    native_kind = "anthropic"

    def encode_request(self, endpoint: str, body: Mapping[str, Any], model: str, stream: bool) -> tuple[str, bytes]:
        if endpoint != "chat/completions":
            raise APIError(
                400,
                f"`{body.get('model')}` (Claude on Vertex AI) supports only /v1/chat/completions.",
                code="unsupported_endpoint",
            )
        request = to_anthropic({**body, "model": model})
        del request["model"]
        request["anthropic_version"] = VERTEX_ANTHROPIC_VERSION
        request.pop("stream", None)
        if stream:  # streamRawPredict streams only when the body says so too
            request["stream"] = True
        return _path(model, stream), orjson.dumps(request)

    def decode_response(self, raw: bytes) -> Event | None:
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        return Event.of(from_anthropic(message)) if isinstance(message, dict) else None

    def stream_decoder(self, keep_native: bool = False) -> AnthropicStreamDecoder:
        return AnthropicStreamDecoder(keep_native)

    def encode_native(self, body: Mapping[str, Any], model: str, stream: bool) -> tuple[str, bytes]:
        kept = {k: v for k, v in body.items() if k in NATIVE_FIELDS}
        return _path(model, stream), orjson.dumps(
            {**kept, "anthropic_version": VERTEX_ANTHROPIC_VERSION, "stream": stream}
        )

    def framing(self) -> SSEParser:
        return SSEParser()
