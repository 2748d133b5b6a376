"""AWS Signature Version 4 for one HTTP request (https://docs.aws.amazon.com/IAM/latest/UserGuide/
reference_sigv-create-signed-request.html), checked against AWS's published test suite (get-vanilla,
post-vanilla, get-vanilla-query-order-key-case: tests/unit/test_aws_sigv4.py).

The canonical URI is the request's path URI-encoded once more (the rule for every service but S3: the
path `/model/a%3A0/converse` is signed as `/model/a%253A0/converse`); the signed headers are `host`,
`x-amz-date`, `x-amz-security-token` when there is a session token, and whichever the caller names.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"


@dataclass(frozen=True, slots=True)
class AwsCredentials:
    access_key_id: str
    secret_access_key: str
    session_token: str = ""

    def __repr__(self) -> str:  # never the secret, in a log or a traceback
        return f"AwsCredentials(access_key_id={self.access_key_id[:4]}…)"


def _hmac(key: bytes, data: str) -> bytes:
    return hmac.new(key, data.encode(), hashlib.sha256).digest()


def signing_key(secret: str, day: str, region: str, service: str) -> bytes:
    key = _hmac(f"AWS4{secret}".encode(), day)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    return key


def host_of(url: str) -> str:
    """The Host header an HTTP client sends for `url` (no port when it is the scheme's default)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    default = 443 if parts.scheme == "https" else 80
    return host if parts.port in (None, default) else f"{host}:{parts.port}"


def _canonical_query(query: str) -> str:
    pairs = []
    for item in query.split("&") if query else []:
        name, _, value = item.partition("=")
        pairs.append((quote(name, safe="-_.~"), quote(value, safe="-_.~")))
    return "&".join(f"{n}={v}" for n, v in sorted(pairs))


def canonical_request(method: str, url: str, headers: dict[str, str], signed: list[str], payload_hash: str) -> str:
    """The canonical request: method, URI, query, the `signed` headers (lower-case names), payload hash."""
    parts = urlsplit(url)
    uri = quote(parts.path or "/", safe="/~")
    lowered = {name.lower(): " ".join(value.strip().split()) for name, value in headers.items()}
    canonical_headers = "".join(f"{name}:{lowered[name]}\n" for name in signed)
    return "\n".join([method, uri, _canonical_query(parts.query), canonical_headers, ";".join(signed), payload_hash])


def sign(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    credentials: AwsCredentials,
    region: str,
    service: str,
    now: datetime | None = None,
) -> dict[str, str]:
    """The headers that sign the request: `x-amz-date`, `x-amz-security-token` (with a session token) and
    `authorization`. `headers` are signed too (besides `host`, which comes from the URL)."""
    when = (now or datetime.now(UTC)).astimezone(UTC)
    amz_date, day = when.strftime("%Y%m%dT%H%M%SZ"), when.strftime("%Y%m%d")
    added = {"x-amz-date": amz_date}
    if credentials.session_token:
        added["x-amz-security-token"] = credentials.session_token
    all_headers = {**{k.lower(): v for k, v in headers.items()}, "host": host_of(url), **added}
    signed = sorted(all_headers)
    payload_hash = hashlib.sha256(body).hexdigest()
    request = canonical_request(method, url, all_headers, signed, payload_hash)
    scope = f"{day}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(request.encode()).hexdigest()])
    key = signing_key(credentials.secret_access_key, day, region, service)
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    added["authorization"] = (
        f"{ALGORITHM} Credential={credentials.access_key_id}/{scope}, "
        f"SignedHeaders={';'.join(signed)}, Signature={signature}"
    )
    return added
