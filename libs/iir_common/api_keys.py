"""API key format: `iir-<random>`. Stored and compared only as a SHA-256 digest, with a short visible prefix."""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "iir-"
VISIBLE_CHARS = 12


def generate_key(length: int = 40, prefix: str = KEY_PREFIX) -> str:
    """A new random key: `prefix` + `length` URL-safe characters (6 bits of entropy each)."""
    if length < 16:
        raise ValueError("an API key needs at least 16 random characters")
    body = secrets.token_urlsafe(length)[:length]
    return f"{prefix}{body}"


def hash_key(key: str) -> bytes:
    # Keys carry 200+ bits of entropy, so a fast unsalted digest is safe and lets us look a key up by hash.
    return hashlib.sha256(key.encode()).digest()


def visible_prefix(key: str) -> str:
    return key[:VISIBLE_CHARS]


def same_secret(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
