"""The wire formats by kind: adding one is a module with a codec, and a line here."""

from __future__ import annotations

from iir_gateway.wire.anthropic_messages import AnthropicMessagesCodec
from iir_gateway.wire.base import WireCodec
from iir_gateway.wire.bedrock_converse import BedrockConverseCodec
from iir_gateway.wire.gemini_generate import GeminiCodec
from iir_gateway.wire.openai_chat import OpenAIChatCodec
from iir_gateway.wire.vertex_anthropic import VertexAnthropicCodec

CODECS: dict[str, WireCodec] = {
    codec.kind: codec
    for codec in (
        OpenAIChatCodec(),
        AnthropicMessagesCodec(),
        VertexAnthropicCodec(),
        GeminiCodec(),
        BedrockConverseCodec(),
    )
}


def codec_for(kind: str) -> WireCodec:
    return CODECS[kind]
