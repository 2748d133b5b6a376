"""AWS Bedrock's Converse API: `POST /model/{modelId}/converse`, streams from `/converse-stream` in AWS's
binary event stream (`wire.eventstream`). Chat requests translated both ways (mappings in
`bedrock_request`, `bedrock_response`, `bedrock_stream`); requests are signed by the provider (SigV4)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson

from iir_gateway.answer import Event
from iir_gateway.errors import APIError
from iir_gateway.wire.bedrock_request import to_converse
from iir_gateway.wire.bedrock_response import from_converse
from iir_gateway.wire.bedrock_stream import BedrockStreamDecoder
from iir_gateway.wire.eventstream import EventStreamParser


class BedrockConverseCodec:
    kind = "bedrock"
    native_kind = "bedrock"

    def encode_request(self, endpoint: str, body: Mapping[str, Any], model: str, stream: bool) -> tuple[str, bytes]:
        if endpoint != "chat/completions":
            raise APIError(
                400, f"`{body.get('model')}` (Bedrock) supports only /v1/chat/completions.", code="unsupported_endpoint"
            )
        # The model ID (or an inference profile's ARN) is one path segment: `:` and `/` are encoded.
        path = f"model/{quote(model, safe='')}/{'converse-stream' if stream else 'converse'}"
        return path, orjson.dumps(to_converse(dict(body)))

    def decode_response(self, raw: bytes) -> Event | None:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        return Event.of(from_converse(data)) if isinstance(data, dict) else None

    def stream_decoder(self, keep_native: bool = False) -> BedrockStreamDecoder:
        return BedrockStreamDecoder()

    def encode_native(self, body: Mapping[str, Any], model: str, stream: bool) -> tuple[str, bytes]:
        return self.encode_request("chat/completions", body, model, stream)  # no client speaks Converse here

    def framing(self) -> EventStreamParser:
        return EventStreamParser()
