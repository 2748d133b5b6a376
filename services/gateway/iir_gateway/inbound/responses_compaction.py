"""`POST /v1/responses/compact`: a conversation folded into one `compaction` item that a later request's
`input` starts from, without `previous_response_id`.

IIR does not summarise: the item holds the conversation itself (its chat messages, after the stored
conversation it continued), and a later input expands it back, so nothing is lost and no model runs. Its
`encrypted_content` is opaque to clients but not encrypted: base64 of JSON, holding only what the client
sent (scrubbed as any request is), so a client that forged one could have sent the same messages itself.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

import orjson

from iir_gateway.errors import invalid_value
from iir_gateway.inbound.responses_answer import new_id, usage

_TAG = b"iir-compaction-v1:"
_ROLES = ("system", "user", "assistant", "tool")


def compaction(messages: list[dict[str, Any]], prompt_tokens: int) -> dict[str, Any]:
    """The `response.compaction` resource for a conversation (its chat messages)."""
    content = base64.urlsafe_b64encode(_TAG + orjson.dumps(messages)).decode()
    item = {"type": "compaction", "id": new_id("cmp"), "encrypted_content": content}
    return {
        "id": new_id("resp"),
        "object": "response.compaction",
        "created_at": int(time.time()),
        "output": [item],
        "usage": usage({"prompt_tokens": prompt_tokens, "completion_tokens": 0}),
    }


def expanded(item: dict[str, Any], param: str) -> list[dict[str, Any]]:
    """The chat messages a `compaction` input item holds; 400 for one IIR did not make."""
    try:
        raw = base64.urlsafe_b64decode(str(item.get("encrypted_content", "")).encode())
        messages = orjson.loads(raw[len(_TAG) :]) if raw.startswith(_TAG) else None
    except (binascii.Error, ValueError):
        messages = None
    if not isinstance(messages, list) or not all(isinstance(m, dict) and m.get("role") in _ROLES for m in messages):
        raise invalid_value("This compaction item was not made by this gateway's /v1/responses/compact.", param)
    return messages
