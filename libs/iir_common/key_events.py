"""Key events the auth service publishes on Redis, so every gateway drops a revoked key at once."""

from __future__ import annotations

from dataclasses import dataclass

import orjson


def channel(prefix: str) -> str:
    """The pub/sub channel of key events, under the deployment's Redis prefix (`IIR_REDIS_PREFIX`)."""
    return f"{prefix}auth:key-events"


# How long a secret stays marked as issued (by auth) or validated (by a gateway): a marked secret is still
# validated, but a failed-auth lockout of its client's address does not refuse it.
KNOWN_SECRET_TTL_S = 30 * 86400


def known_secret(prefix: str, key_hash: str) -> str:
    """The Redis key that marks a secret (by its hex SHA-256) as issued or validated before."""
    return f"{prefix}authok:{key_hash}"


@dataclass(frozen=True)
class KeyEvent:
    type: str  # "revoked", "updated": gateways drop the key from their cache either way
    # Gateways drop every secret of this key they cached (the current one, and one kept for a grace period).
    key_id: str
    key_hash: str  # hex SHA-256 of the secret, as gateways index their cache

    def encode(self) -> bytes:
        return orjson.dumps({"type": self.type, "key_id": self.key_id, "key_hash": self.key_hash})

    @classmethod
    def decode(cls, raw: bytes | str) -> KeyEvent:
        data = orjson.loads(raw)
        return cls(str(data["type"]), str(data.get("key_id", "")), str(data.get("key_hash", "")))
