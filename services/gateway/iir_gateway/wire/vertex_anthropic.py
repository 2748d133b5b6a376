"""Claude on Google Vertex AI: Anthropic's Messages API behind Vertex's `rawPredict` (whole answers) and
`streamRawPredict` (SSE), https://docs.anthropic.com/en/api/claude-on-vertex-ai. The body is a Messages
request without `model` (the URL names it) and with `anthropic_version: vertex-2023-10-16`; answers and
streams are Anthropic's, translated as for Anthropic's own API."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from iir_gateway.errors import APIError
from iir_gateway.wire.anthropic_messages import NATIVE_FIELDS, AnthropicMessagesCodec
from iir_gateway.wire.anthropic_request import to_anthropic

VERTEX_ANTHROPIC_VERSION = "vertex-2023-10-16"


def _path(model: str, stream: bool) -> str:
    return f"{model}:streamRawPredict" if stream else f"{model}:rawPredict"


class VertexAnthropicCodec(AnthropicMessagesCodec):
    """Anthropic's codec with Vertex's paths and body; answers, streams and framing are Anthropic's own."""

    kind = "vertex-anthropic"

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

    def encode_native(self, body: Mapping[str, Any], model: str, stream: bool) -> tuple[str, bytes]:
        kept = {k: v for k, v in body.items() if k in NATIVE_FIELDS}
        return _path(model, stream), orjson.dumps(
            {**kept, "anthropic_version": VERTEX_ANTHROPIC_VERSION, "stream": stream}
        )
