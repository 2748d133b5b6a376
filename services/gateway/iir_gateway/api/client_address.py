"""Who the client is: the TCP peer, or, behind proxies listed by address, the right-most address of
`X-Forwarded-For` that is not one of them.

Only the proxies' own entries are believed: a proxy appends the address it saw, so everything left of the
first untrusted entry (read from the right) was written by the client and is ignored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

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


def parse_networks(spec: str, setting: str) -> tuple[Network, ...]:
    """Comma-separated CIDRs (or single addresses); `*` and junk are refused, naming the setting."""
    networks = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part == "*":
            raise ValueError(
                f"{setting}: '*' would trust every client's forwarded headers; list the proxies' "
                "addresses or CIDRs instead"
            )
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"{setting}: {part!r} is not an IP address or CIDR") from None
    return tuple(networks)


def parse_address(text: str) -> Address | None:
    """An address from `1.2.3.4`, `1.2.3.4:5678`, `[::1]:80` or `::1`; None for anything else."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def in_networks(address: str | Address | None, networks: Iterable[Network]) -> bool:
    addr = parse_address(address) if isinstance(address, str) else address
    return addr is not None and any(addr in n for n in networks)


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
