"""Which network addresses media URLs may reach (server-side request forgery policy).

Every spelling of an address a resolver would accept must be judged by the
address it means, so IPv4 literals are parsed with `inet_aton` rules (decimal,
octal, hex, 1-4 parts) rather than only dotted-quad, and IPv6 forms that embed
an IPv4 address are judged by the embedded one too.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_INET_ATON_PART = re.compile(r"^(0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*)$")

# Cloud metadata endpoints that are not already link-local or private.
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address) for address in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)


def parse_inet_aton(text: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address glibc's inet_aton would read from `text`, or None.

    Accepts "127.0.0.1", "127.1", "2130706433", "0x7f000001", "0177.0.0.1":
    the last part fills all remaining bytes, and each part may be octal
    (leading 0) or hex (leading 0x).
    """
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values = []
    for part in parts:
        if not _INET_ATON_PART.match(part):
            return None
        if part[:2].lower() == "0x":
            values.append(int(part[2:] or "0", 16))
        elif len(part) > 1 and part[0] == "0":
            values.append(int(part, 8))
        else:
            values.append(int(part))
    *leading, last = values
    if any(value > 0xFF for value in leading) or last >= 256 ** (4 - len(leading)):
        return None
    number = 0
    for value in leading:
        number = number * 256 + value
    return ipaddress.IPv4Address(number * 256 ** (4 - len(leading)) + last)


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address a URL host names literally (any spelling), or None for a name."""
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    return parse_inet_aton(host.rstrip("."))


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, Teredo), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


class AddressPolicy:
    """Refuses non-public addresses unless an allow-listed network covers them."""

    def __init__(self, allowed_networks: Iterable[str] = (), allowed_domains: Iterable[str] = ()) -> None:
        self.allowed_networks: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(network, strict=False) for network in allowed_networks
        )
        self.allowed_domains = tuple(domain.lower().strip(".") for domain in allowed_domains if domain.strip("."))

    def domain_allowed(self, host: str) -> bool:
        if not self.allowed_domains:
            return True
        host = host.lower().strip("[]").rstrip(".")
        return any(host == domain or host.endswith("." + domain) for domain in self.allowed_domains)

    def refusal(self, address: IPAddress) -> str | None:
        """Why `address` may not be fetched from, or None when it may."""
        embedded = embedded_ipv4(address)
        if embedded is None:
            candidates = [address]
        elif isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            # A dual-stack socket really talks IPv4 to the mapped address.
            candidates = [embedded]
        else:
            candidates = [embedded, address]
        if any(self._allow_listed(candidate) for candidate in candidates):
            return None
        for candidate in candidates:
            reason = _non_public_reason(candidate)
            if reason is not None:
                return f"{address} is {reason}"
        return None

    def _allow_listed(self, address: IPAddress) -> bool:
        return any(address.version == network.version and address in network for network in self.allowed_networks)


def _non_public_reason(address: IPAddress) -> str | None:
    if address in _METADATA_ADDRESSES:
        return "a cloud metadata address"
    checks = (
        ("is_unspecified", "unspecified"),
        ("is_loopback", "a loopback address"),
        ("is_link_local", "a link-local address"),
        ("is_private", "a private address"),
        ("is_multicast", "a multicast address"),
        ("is_reserved", "a reserved address"),
    )
    for attribute, reason in checks:
        if getattr(address, attribute):
            return reason
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        return "a scoped address"
    if not address.is_global:  # e.g. carrier-grade NAT 100.64.0.0/10
        return "not a public address"
    return None
