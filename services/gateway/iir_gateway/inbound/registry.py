"""The inbound protocols by name: adding one is a module with a protocol, and a line here (and a route
in `inbound.routes`)."""

from __future__ import annotations

from iir_gateway.inbound.base import InboundProtocol
from iir_gateway.inbound.messages import MESSAGES
from iir_gateway.inbound.openai import CHAT, COMPLETIONS, EMBEDDINGS
from iir_gateway.inbound.responses import RESPONSES

PROTOCOLS: dict[str, InboundProtocol] = {p.name: p for p in (CHAT, COMPLETIONS, EMBEDDINGS, MESSAGES, RESPONSES)}


def protocol_for(name: str) -> InboundProtocol:
    return PROTOCOLS[name]
