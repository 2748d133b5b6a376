"""IP networks and addresses as IIR's settings write them (CIDR lists) and as headers carry them."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


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
