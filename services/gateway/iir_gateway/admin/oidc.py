"""An OpenID Connect client for the admin UI's single sign-on: the authorization code flow with PKCE
(S256), a one-time `state` and a `nonce` kept in Redis for ten minutes, the code exchanged at the token
endpoint, and the ID token checked: RS256 signature by a key of the provider's JWKS, issuer, audience,
expiry and nonce. Discovery and keys are read from the issuer's `/.well-known/openid-configuration`."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

_PENDING_S = 600  # a sign-in must come back from the provider within this
_LEEWAY_S = 60  # clock skew allowed on `exp` and `iat`


class SignInError(Exception):
    """A sign-in that cannot complete; the message is safe to show the person."""


@dataclass(frozen=True, slots=True)
class Identity:
    issuer: str
    subject: str
    email: str
    groups: tuple[str, ...]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class OIDCClient:
    def __init__(
        self,
        issuer: str,
        client_id: str,
        client_secret: str,
        redirect_url: str,
        scopes: str,
        groups_claim: str,
        redis: Any,
        prefix: str,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.client_id, self.client_secret = client_id, client_secret
        self.redirect_url, self.scopes, self.groups_claim = redirect_url, scopes, groups_claim
        self.redis, self.prefix = redis, prefix
        self._config: dict[str, Any] | None = None
        self._keys: dict[str, rsa.RSAPublicKey] = {}

    async def _get(self, url: str) -> Any:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http, http.get(url) as resp:
            if resp.status != 200:
                raise SignInError(f"The identity provider answered {resp.status} for {url}.")
            return await resp.json(content_type=None)

    async def _configuration(self) -> dict[str, Any]:
        if self._config is None:
            config = await self._get(f"{self.issuer}/.well-known/openid-configuration")
            if not isinstance(config, dict) or config.get("issuer", "").rstrip("/") != self.issuer:
                raise SignInError("The identity provider's configuration names another issuer.")
            self._config = config
        return self._config

    async def start(self) -> tuple[str, str]:
        """The provider's authorization URL for a new sign-in (its state, nonce and verifier kept), and its
        state, which the browser must bring back (a cookie), so no one can finish a sign-in another began."""
        config = await self._configuration()
        state, nonce, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(48)
        pending = orjson.dumps({"nonce": nonce, "verifier": verifier})
        await self.redis.set(f"{self.prefix}oidc:state:{state}", pending, ex=_PENDING_S)
        query = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_url,
            "scope": self.scopes,
            "state": state,
            "nonce": nonce,
            "code_challenge": _b64(hashlib.sha256(verifier.encode()).digest()),
            "code_challenge_method": "S256",
        }
        return f"{config['authorization_endpoint']}?{urllib.parse.urlencode(query)}", state

    async def finish(self, code: str, state: str) -> Identity:
        """The identity the provider vouches for, from the code and state it sent back."""
        raw = await self.redis.getdel(f"{self.prefix}oidc:state:{state[:100]}")  # once only
        if raw is None:
            raise SignInError("This sign-in expired or was already used; start again.")
        pending = orjson.loads(raw)
        config = await self._configuration()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_url,
            "client_id": self.client_id,
            "code_verifier": pending["verifier"],
        }
        if self.client_secret:
            form["client_secret"] = self.client_secret
        timeout = aiohttp.ClientTimeout(total=10)
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.post(config["token_endpoint"], data=form) as resp,
        ):
            tokens = await resp.json(content_type=None)
            if resp.status != 200 or not isinstance(tokens, dict) or "id_token" not in tokens:
                raise SignInError("The identity provider refused the sign-in.")
        claims = await self._verified(str(tokens["id_token"]), pending["nonce"])
        groups = claims.get(self.groups_claim) or []
        return Identity(
            issuer=self.issuer,
            subject=str(claims.get("sub", "")),
            email=str(claims.get("email", "")),
            groups=tuple(str(g) for g in groups) if isinstance(groups, list) else (),
        )

    async def _key(self, kid: str) -> rsa.RSAPublicKey:
        if kid not in self._keys:  # a key the provider rotated in: read its keys again
            jwks = await self._get((await self._configuration())["jwks_uri"])
            for jwk in jwks.get("keys", []) if isinstance(jwks, dict) else []:
                if jwk.get("kty") == "RSA" and "n" in jwk and "e" in jwk:
                    numbers = rsa.RSAPublicNumbers(
                        int.from_bytes(_unb64(jwk["e"]), "big"), int.from_bytes(_unb64(jwk["n"]), "big")
                    )
                    self._keys[str(jwk.get("kid", ""))] = numbers.public_key()
        if kid not in self._keys:
            raise SignInError("The ID token is signed by a key the identity provider does not publish.")
        return self._keys[kid]

    async def _verified(self, token: str, nonce: str) -> dict[str, Any]:
        """The ID token's claims, once its signature, issuer, audience, times and nonce are right."""
        try:
            head_b64, body_b64, signature_b64 = token.split(".")
            header, claims = orjson.loads(_unb64(head_b64)), orjson.loads(_unb64(body_b64))
            signature = _unb64(signature_b64)
        except ValueError:
            raise SignInError("The ID token is malformed.") from None
        if not isinstance(header, dict) or not isinstance(claims, dict) or header.get("alg") != "RS256":
            raise SignInError("The ID token is not signed with RS256.")
        key = await self._key(str(header.get("kid", "")))
        try:
            key.verify(signature, f"{head_b64}.{body_b64}".encode(), padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise SignInError("The ID token's signature is wrong.") from None
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        now = time.time()
        if str(claims.get("iss", "")).rstrip("/") != self.issuer or self.client_id not in audiences:
            raise SignInError("The ID token is for another issuer or client.")
        if not isinstance(claims.get("exp"), int | float) or claims["exp"] < now - _LEEWAY_S:
            raise SignInError("The ID token has expired.")
        if not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
            raise SignInError("The ID token is not the answer to this sign-in.")
        return claims
