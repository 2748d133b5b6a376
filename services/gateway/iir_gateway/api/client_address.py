"""Who the client is: the TCP peer, or, behind proxies listed by address, the right-most address of
`X-Forwarded-For` that is not one of them.

Only the proxies' own entries are believed: a proxy appends the address it saw, so everything left of the
first untrusted entry (read from the right) was written by the client and is ignored.
"""

from __future__ import annotations

from collections.abc import Iterable

from iir_gateway.networks import in_networks, parse_address, parse_networks

FORWARDING_HEADERS = frozenset(
    {
        b"x-forwarded-for",
        b"forwarded",
        b"x-real-ip",
        b"x-forwarded-host",
        b"x-client-ip",
        b"true-client-ip",
        b"cf-connecting-ip",
    }
)


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
