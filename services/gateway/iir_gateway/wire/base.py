"""The interface of a wire format, and the registry of formats by kind.

A codec turns the gateway's OpenAI-format request into what one kind of upstream expects, and its
answers (whole or streamed) back into OpenAI's format. A provider names the kind of each upstream
(`Upstream.wire`); the upstream client looks the codec up in `wire.registry` and has no format of its
own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from iir_gateway.answer import Event


@dataclass(slots=True)
class NativeBody:
    """A request as the client wrote it in another API's format (`wire`: a codec's kind, "anthropic"),
    sent as it is to an upstream of that format instead of the translation."""

    wire: str
    body: dict[str, Any]


class StreamDecoder(Protocol):
    """Decodes one upstream stream, event by event. `usage` is the OpenAI usage once the upstream sent
    it; `done` once the upstream said the stream is over."""

    usage: dict[str, Any] | None
    done: bool

    def decode(self, payload: bytes) -> list[Event]:
        """The OpenAI events for one upstream `data:` payload (none, one or several)."""
        ...

    def decode_all(self, payloads: list[bytes]) -> list[Event]:
        """The OpenAI events for the payloads of one network read, in order."""
        ...


class Framing(Protocol):
    """Cuts an upstream's stream into the payloads of its events, however the network split it: SSE
    (`wire.sse.SSEParser`) for most, AWS's binary event stream for Bedrock."""

    def feed(self, chunk: bytes) -> list[bytes]:
        """The payloads completed by `chunk`, in order."""
        ...

    def flush(self) -> list[bytes]:
        """The payloads of what is left when the stream ended."""
        ...


class WireCodec(Protocol):
    kind: str
    # The API whose requests it can send as the client wrote them (`NativeBody.wire`): its own kind, or
    # the API it carries (Claude on Vertex carries Anthropic's Messages).
    native_kind: str

    def encode_request(self, endpoint: str, body: Mapping[str, Any], model: str, stream: bool) -> tuple[str, bytes]:
        """(path under the upstream's base URL, request body) for an OpenAI request to `endpoint`
        (`chat/completions`, ...) naming the upstream's `model`. Streams always ask for usage. Raises
        APIError 400 for what this format cannot express."""
        ...

    def decode_response(self, raw: bytes) -> Event | None:
        """The OpenAI answer for a whole upstream answer; None when it is not a JSON object."""
        ...

    def stream_decoder(self, keep_native: bool = False) -> StreamDecoder:
        """A decoder for one stream; with `keep_native`, each event it makes carries the upstream
        payloads it was made from (and those that made none since)."""
        ...

    def encode_native(self, body: Mapping[str, Any], model: str, stream: bool) -> tuple[str, bytes]:
        """(path, body) for a request already in this format (a client of the same API)."""
        ...

    def framing(self) -> Framing:
        """A new framing for one stream of this format."""
        ...
