"""Which failed-auth counter a client address counts against.

An IPv4 address is its own bucket, written the same whether it arrived as `203.0.113.11` or as the
IPv4-mapped `::ffff:203.0.113.11` (a dual-stack listener's form). An IPv6 client gets a whole /64 from
its provider and can take a fresh address from it for every guess, so IPv6 addresses count per /64.
"""

from __future__ import annotations

import ipaddress

from iir_gateway.networks import parse_address

IPV6_PREFIX = 64


def failure_bucket(client_ip: str) -> str:
    """The counter name of `client_ip`: the IPv4 address, or the IPv6 /64 network; junk as it is."""
    addr = parse_address(client_ip)
    if addr is None:
        return client_ip
    if isinstance(addr, ipaddress.IPv6Address):
        mapped = addr.ipv4_mapped
        if mapped is not None:
            return str(mapped)
        return str(ipaddress.IPv6Network((int(addr) >> (128 - IPV6_PREFIX) << (128 - IPV6_PREFIX), IPV6_PREFIX)))
    return str(addr)
