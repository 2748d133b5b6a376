"""Anthropic's Messages API: chat requests become `/v1/messages` calls, answers and streams become
OpenAI chat completions (field mappings in `anthropic_request`, `anthropic_response`, `anthropic_stream`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from iir_gateway.answer import Event
from iir_gateway.errors import APIError
from iir_gateway.wire.anthropic_request import to_anthropic
from iir_gateway.wire.anthropic_response import from_anthropic
from iir_gateway.wire.anthropic_stream import AnthropicStreamDecoder
from iir_gateway.wire.sse import SSEParser

NATIVE_FIELDS = frozenset(
    {
        "messages",
        "max_tokens",
        "system",
        "metadata",
        "stop_sequences",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "thinking",
    }
)


class AnthropicMessagesCodec:
    kind = "anthropic"
    native_kind = "anthropic"

    def encode_request(self, endpoint: str, body: Mapping[str, Any], model: str, stream: bool) -> tuple[str, bytes]:
        if endpoint != "chat/completions":
            raise APIError(
                400,
                f"`{body.get('model')}` (Anthropic) supports only /v1/chat/completions.",
                code="unsupported_endpoint",
            )
        return "v1/messages", orjson.dumps(to_anthropic({**body, "model": model}))

    def decode_response(self, raw: bytes) -> Event | None:
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        return Event.of(from_anthropic(message)) if isinstance(message, dict) else None

    def stream_decoder(self, keep_native: bool = False) -> AnthropicStreamDecoder:
        return AnthropicStreamDecoder(keep_native)

    def encode_native(self, body: Mapping[str, Any], model: str, stream: bool) -> tuple[str, bytes]:
        # Only the Messages parameters the gateway knows: anything else (MCP servers, containers…) would
        # run on the gateway's Anthropic account at the caller's word.
        kept = {k: v for k, v in body.items() if k in NATIVE_FIELDS}
        return "v1/messages", orjson.dumps({**kept, "model": model, "stream": stream})

    def framing(self) -> SSEParser:
        return SSEParser()
