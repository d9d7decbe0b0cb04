"""Server-side request forgery guard: resolve a host once, vet every address, pin the connection.

The downloader fetches URLs written by strangers. A URL that points at ``169.254.169.254`` (cloud
metadata), ``10.x`` or ``127.0.0.1`` would let the input table read the worker's private network.
So the host is resolved here, every address it resolves to is vetted, and the HTTP connection is
then made to exactly that vetted address (see :mod:`pipeline.download.http_fetch`): the name is never
resolved a second time, so DNS rebinding (public answer at check time, private at connect time)
cannot slip past, and nothing is sent to a refused address.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# (host, port) -> addresses as strings. Injectable so tests map fake names without real DNS.
Resolver = Callable[[str, int], Sequence[str]]

# NAT64 well-known prefix: a public-looking IPv6 address that a NAT64 gateway turns into the
# embedded IPv4 address, so the embedded address must pass the guard too.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class BlockedAddressError(Exception):
    """The host resolves to an address the guard refuses; nothing was sent to it."""


class ResolutionError(Exception):
    """The host name could not be resolved."""


def system_resolver(host: str, port: int) -> list[str]:
    """Resolve with the OS resolver; addresses in the order it prefers, duplicates removed."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ResolutionError(f"cannot resolve {host!r}: {exc}") from exc
    seen: dict[str, None] = {}
    for _family, _type, _proto, _canon, sockaddr in infos:
        seen.setdefault(str(sockaddr[0]).split("%", 1)[0], None)
    return list(seen)


@dataclass(frozen=True)
class StaticResolver:
    """A resolver from a fixed table (picklable, for tests and air-gapped runs).

    Names not in the table raise :class:`ResolutionError` unless ``fallback`` is given.
    """

    table: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    fallback: Resolver | None = None

    def __call__(self, host: str, port: int) -> list[str]:
        key = host.lower().rstrip(".")
        if key in self.table:
            return list(self.table[key])
        if self.fallback is not None:
            return list(self.fallback(host, port))
        raise ResolutionError(f"cannot resolve {host!r}: not in the static table")


def parse_ip(host: str) -> IPAddress | None:
    """The address if ``host`` is an IP literal (``[v6]`` brackets and zone ids allowed)."""
    text = host.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address really leads to, for the forms that carry one."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    # deprecated IPv4-compatible form ::a.b.c.d (but not :: and ::1 themselves)
    if int(ip) >> 32 == 0 and int(ip) > 1:
        return ipaddress.IPv4Address(int(ip))
    return None


def refusal_reason(ip: IPAddress) -> str | None:
    """Why the guard refuses this address, as a predicate ("is link-local"); None when public."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            reason = refusal_reason(inner)
            return f"embeds {inner}, which {reason}" if reason else None
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("not globally routable", not ip.is_global),
    )
    for name, hit in checks:
        if hit:
            return f"is {name}"
    return None


@dataclass(frozen=True)
class AddressGuard:
    """Resolves a host and returns the vetted addresses to connect to, or raises.

    ``allow_private_networks=True`` lets every address through (the demo uses it to reach its
    loopback server). ``allowed_networks`` lets through only the given CIDRs (an intranet image
    host, or the tests' loopback server while everything else stays refused).
    """

    allow_private_networks: bool = False
    resolver: Resolver | None = None  # None: the OS resolver
    allowed_networks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        try:
            nets = tuple(ipaddress.ip_network(n, strict=False) for n in self.allowed_networks)
        except ValueError as exc:
            raise ValueError(f"allowed_networks: {exc}") from exc
        object.__setattr__(self, "_networks", nets)

    def _explicitly_allowed(self, ip: IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self._networks)  # type: ignore[attr-defined]

    def vetted_addresses(self, host: str, port: int) -> list[str]:
        """Addresses ``host`` may be reached at; raises if any of them is refused.

        Refusing the whole host when *any* answer is private is deliberate: an attacker who
        controls the zone can mix one public and one private record and hope for the second.
        """
        literal = parse_ip(host)
        if literal is not None:
            addresses = [str(literal)]
        else:
            resolve = self.resolver or system_resolver
            addresses = list(resolve(host, port))
            if not addresses:
                raise ResolutionError(f"cannot resolve {host!r}: no addresses")
        if self.allow_private_networks:
            return addresses
        for text in addresses:
            ip = parse_ip(text)
            if ip is None:
                raise ResolutionError(f"resolver returned a non-address {text!r} for {host!r}")
            reason = None if self._explicitly_allowed(ip) else refusal_reason(ip)
            if reason is not None:
                where = f"{host} resolves to {ip}, which" if literal is None else f"{ip}"
                raise BlockedAddressError(
                    f"refused to connect: {where} {reason} "
                    "(pass --allow-private-networks to allow it)"
                )
        return addresses


__all__ = [
    "AddressGuard",
    "BlockedAddressError",
    "ResolutionError",
    "Resolver",
    "StaticResolver",
    "parse_ip",
    "refusal_reason",
    "system_resolver",
]
