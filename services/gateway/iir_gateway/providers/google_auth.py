"""Google service account credentials: the JSON key file → a signed JWT (RS256) → an OAuth access token
from the key's `token_uri` (https://developers.google.com/identity/protocols/oauth2/service-account).

The key file is read per request (a rotated Secret file takes effect at its next request) and parsed
again only when its bytes change; the access token is cached under a digest of the file until shortly
before it expires. Neither the private key nor the token is ever logged or put in an error message.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from iir_gateway.providers.tokens import TokenCache, digest, lifetime, post_form
from iir_gateway.upstream.target import CredentialsError

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME_S = 3600  # Google's maximum


@dataclass(frozen=True, slots=True)
class ServiceAccountKey:
    client_email: str
    private_key: rsa.RSAPrivateKey
    private_key_id: str
    token_uri: str
    project_id: str


def parse_key(raw: bytes) -> ServiceAccountKey:
    """The service account of a JSON key file; ValueError (naming no secret) when it is not one."""
    try:
        info = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValueError("the service account key file is not JSON") from None
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise ValueError("the key file is not a service account's JSON key (`type` must be `service_account`)")
    for name in ("client_email", "private_key", "token_uri"):
        if not isinstance(info.get(name), str) or not info[name]:
            raise ValueError(f"the service account key file has no `{name}`")
    try:
        key = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
    except (ValueError, TypeError):
        raise ValueError("the service account key file's `private_key` is not a PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the service account key file's `private_key` is not an RSA key")
    return ServiceAccountKey(
        client_email=info["client_email"],
        private_key=key,
        private_key_id=str(info.get("private_key_id") or ""),
        token_uri=info["token_uri"],
        project_id=str(info.get("project_id") or ""),
    )


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def signed_jwt(key: ServiceAccountKey, scope: str, now: float | None = None) -> str:
    """The assertion exchanged for an access token: RS256 over `{iss, scope, aud, iat, exp}`."""
    issued = int(time.time() if now is None else now)
    header = {"alg": "RS256", "typ": "JWT", **({"kid": key.private_key_id} if key.private_key_id else {})}
    claims = {
        "iss": key.client_email,
        "scope": scope,
        "aud": key.token_uri,
        "iat": issued,
        "exp": issued + ASSERTION_LIFETIME_S,
    }
    signing_input = _b64(orjson.dumps(header)) + b"." + _b64(orjson.dumps(claims))
    signature = key.private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return (signing_input + b"." + _b64(signature)).decode()


class ServiceAccountAuth:
    """The `authorization: Bearer` header of the service account whose key file `key_file()` names."""

    def __init__(self, key_file: str, scope: str) -> None:
        self.key_file = key_file
        self.scope = scope
        self.tokens = TokenCache()
        self._parsed: tuple[str, ServiceAccountKey] | None = None  # (digest of the file, its key)

    def _read(self) -> tuple[str, ServiceAccountKey]:
        """The key file's digest and key; CredentialsError when it is missing or not a service account's."""
        if not self.key_file:
            raise CredentialsError("no service account key file is set")
        try:
            raw = Path(self.key_file).read_bytes()
        except OSError:
            raise CredentialsError(f"the service account key file {self.key_file} cannot be read") from None
        key_digest = digest(raw)
        parsed = self._parsed
        if parsed is not None and parsed[0] == key_digest:
            return parsed
        try:
            parsed = (key_digest, parse_key(raw))
        except ValueError as exc:
            raise CredentialsError(str(exc)) from None
        self._parsed = parsed
        return parsed

    def key(self) -> ServiceAccountKey | None:
        """The service account, or None when its key file is missing or invalid."""
        try:
            return self._read()[1]
        except CredentialsError:
            return None

    async def authorize(self, method: str, url: str, headers: dict[str, str], body: bytes) -> dict[str, str]:
        key_digest, key = self._read()

        async def fetch() -> tuple[str, float]:
            data = await post_form(key.token_uri, {"grant_type": JWT_BEARER, "assertion": signed_jwt(key, self.scope)})
            return str(data["access_token"]), lifetime(data)

        return {"authorization": f"Bearer {await self.tokens.get(digest(key_digest, self.scope), fetch)}"}
