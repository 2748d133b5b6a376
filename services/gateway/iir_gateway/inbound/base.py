"""The interface of an inbound protocol: an API that clients speak to the gateway.

A protocol names the pipeline operation its requests run as, translates each request into that
operation's (OpenAI) form, and writes the pipeline's answer (a document, or a stream of OpenAI events)
and its errors as its clients expect. The HTTP edge serves every protocol the same way; the outbound
direction (the gateway to an upstream) is `wire/`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from starlette.responses import Response

from iir_gateway.answer import Answer, Event
from iir_gateway.errors import APIError
from iir_gateway.schemas import InferenceRequest
from iir_gateway.wire.base import NativeBody


class StreamEncoder(Protocol):
    """One streamed answer as the client's server-sent events."""

    def head(self) -> bytes:
        """What is sent before the first event (empty for none)."""
        ...

    def feed(self, event: Event, more: list[Event]) -> bytes:
        """The frames for `event` and the events the same upstream read brought (`more`)."""
        ...

    async def tail(self, completed: bool) -> bytes:
        """The last bytes once the stream ended; `completed`: it ran to its end (else it broke off)."""
        ...


class Exchange(Protocol):
    """One request of a protocol: translated on its way in, its answer written on its way out."""

    @property
    def native(self) -> NativeBody | None:
        """The request as the client wrote it, for an upstream of the same API."""
        ...

    def request(self, body: dict[str, Any]) -> dict[str, Any]:
        """The pipeline's request for the client's `body`; APIError 400 for what is invalid or cannot
        be translated."""
        ...

    def headers(self, answer: Answer) -> dict[str, str]:
        """The response headers for `answer`."""
        ...

    async def document(self, answer: Answer) -> bytes:
        """The client's JSON document for a whole answer."""
        ...

    def stream(self, answer: Answer) -> StreamEncoder:
        """The encoder of a streamed answer."""
        ...


class InboundProtocol(Protocol):
    """An API clients speak, run as one pipeline operation."""

    @property
    def name(self) -> str: ...

    @property
    def operation(self) -> str:
        """The pipeline operation: `chat/completions`, `completions`, `embeddings`."""
        ...

    @property
    def schema(self) -> type[InferenceRequest]:
        """What the pipeline validates the translated request against."""
        ...

    def exchange(self, headers: Mapping[str, str]) -> Exchange:
        """The exchange of one request that came with `headers`."""
        ...

    def error(self, exc: APIError) -> Response:
        """`exc` as this API's clients read errors."""
        ...
