"""Who the client is: the TCP peer, or, behind proxies listed by address, the right-most address of
`X-Forwarded-For` that is not one of them.

Only the proxies' own entries are believed: a proxy appends the address it saw, so everything left of the
first untrusted entry (read from the right) was written by the client and is ignored.
"""

from __future__ import annotations

from collections.abc import Iterable

from iir_gateway.networks import in_networks, parse_address, parse_networks

# Headers by which a proxy, load balancer, CDN or mesh says whom it forwards for (or that it forwarded at
# all). Their presence, whatever their value, marks a request as forwarded (`is_forwarded`).
FORWARDING_HEADERS = frozenset(
    {
        b"forwarded",
        b"forwarded-for",
        b"via",
        b"x-forwarded",
        b"x-real-ip",
        b"x-client-ip",
        b"x-cluster-client-ip",
        b"x-proxyuser-ip",
        b"x-originating-ip",
        b"x-remote-ip",
        b"x-remote-addr",
        b"x-host",
        b"client-ip",
        b"true-client-ip",
        b"fastly-client-ip",
        b"akamai-client-ip",
    }
)
FORWARDING_PREFIXES = (
    b"x-forwarded-",  # -for, -host, -proto, -port, -server, -by…
    b"x-original-",  # -forwarded-for, -host, -uri, -url (ingress-nginx)
    b"x-envoy-",  # -external-address, -original-path… (Envoy, Istio)
    b"cf-connecting-",  # -ip, -ipv6 (Cloudflare)
    b"x-appengine-",
    b"x-azure-",
    b"x-ms-forwarded-",
)


# Anywhere in a name: WL-Proxy-Client-IP, Proxy-Client-IP, X-Real-IP variants, X-Forwarded variants.
FORWARDING_WORDS = (b"forwarded", b"client-ip", b"real-ip", b"coming-from")


def _says_forwarded(name: bytes) -> bool:
    name = name.replace(b"_", b"-")  # some proxies pass X_Forwarded_For on, and some servers read it
    return (
        name in FORWARDING_HEADERS or name.startswith(FORWARDING_PREFIXES) or any(w in name for w in FORWARDING_WORDS)
    )


def is_forwarded(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether any header says a proxy forwarded this request (ASGI header names are lower case)."""
    return any(_says_forwarded(name) for name, _ in headers)


class ClientAddressResolver:
    """Resolves the client address of a request from its peer and its `X-Forwarded-For` headers."""

    def __init__(self, trusted_proxies: str) -> None:
        self.proxies = parse_networks(trusted_proxies, "IIR_TRUSTED_PROXIES")

    def is_proxy(self, peer: str) -> bool:
        return bool(self.proxies) and in_networks(peer, self.proxies)

    def resolve(self, peer: str, headers: Iterable[tuple[bytes, bytes]]) -> str:
        if not self.is_proxy(peer):
            return peer
        hops: list[str] = []
        for name, value in headers:  # several headers count as one list, in order
            if name == b"x-forwarded-for":
                hops += value.decode("latin-1").split(",")
        client = peer
        for hop in reversed(hops):
            addr = parse_address(hop)
            if addr is None:  # a trusted proxy wrote junk: believe nothing further left
                return client
            client = str(addr)
            if not any(addr in n for n in self.proxies):
                return client
        return client
