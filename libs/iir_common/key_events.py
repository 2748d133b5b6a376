"""Key events the auth service publishes on Redis, so every gateway drops a revoked key at once."""

from __future__ import annotations

from dataclasses import dataclass

import orjson


def channel(prefix: str) -> str:
    """The pub/sub channel of key events, under the deployment's Redis prefix (`IIR_REDIS_PREFIX`)."""
    return f"{prefix}auth:key-events"


@dataclass(frozen=True)
class KeyEvent:
    type: str  # "revoked", "updated": gateways drop the key from their cache either way
    key_id: str
    key_hash: str  # hex SHA-256 of the secret, as gateways index their cache

    def encode(self) -> bytes:
        return orjson.dumps({"type": self.type, "key_id": self.key_id, "key_hash": self.key_hash})

    @classmethod
    def decode(cls, raw: bytes | str) -> KeyEvent:
        data = orjson.loads(raw)
        return cls(str(data["type"]), str(data.get("key_id", "")), str(data.get("key_hash", "")))
