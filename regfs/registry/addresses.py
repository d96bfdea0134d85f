"""Where a registry may send regfs: the rule for URLs a server chose (redirects, foreign
layers' ``urls``, token realms, upload locations).

Registry layer, pure (no IO); stdlib only. regfs often runs as root on a cloud host: a
registry on the internet must not be able to make it send requests to the host itself,
its LAN or the cloud's metadata service (169.254.169.254). Every address a target's host
name resolves to is classified (``address_kind``); a target is allowed when each address
is public, or of the kind of address its *sponsor* (the registry regfs chose, which named
the target) and every answer on the way there came from, or private while those are all
on loopback. A host the user allowed (``--allow-redirect-to``, ``insecure`` in
registries.conf) is not checked.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Collection, Iterable, Sequence


class AddressKind(enum.Enum):
    PUBLIC = "public"
    PRIVATE = "private"
    """RFC 1918, CGNAT (100.64.0.0/10) and unique local (fc00::/7): a LAN."""
    LOOPBACK = "loopback"
    LINK_LOCAL = "link-local"
    """169.254.0.0/16 and fe80::/10, where clouds put their metadata service, and the
    metadata addresses clouds put elsewhere (AWS's fd00:ec2::254, Alibaba's
    100.100.100.200): never reached from a LAN's or a loopback registry's word."""
    SPECIAL = "special-purpose"
    """Unspecified, multicast, reserved, documentation, benchmarking…: nothing to fetch."""


_NETWORKS = tuple(
    (ipaddress.ip_network(network), kind)
    for network, kind in (
        ("fd00:ec2::254/128", AddressKind.LINK_LOCAL),  # first: inside private ranges
        ("100.100.100.200/32", AddressKind.LINK_LOCAL),
        ("127.0.0.0/8", AddressKind.LOOPBACK),
        ("::1/128", AddressKind.LOOPBACK),
        ("169.254.0.0/16", AddressKind.LINK_LOCAL),
        ("fe80::/10", AddressKind.LINK_LOCAL),
        ("10.0.0.0/8", AddressKind.PRIVATE),
        ("172.16.0.0/12", AddressKind.PRIVATE),
        ("192.168.0.0/16", AddressKind.PRIVATE),
        ("100.64.0.0/10", AddressKind.PRIVATE),
        ("fc00::/7", AddressKind.PRIVATE),
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
"""The well-known NAT64 prefix: DNS64 gives IPv4-only hosts such addresses on an
IPv6-only network, and the gateway connects to the IPv4 address in the low 32 bits."""


def address_kind(address: str) -> AddressKind:
    """The kind of an IP address (``10.0.0.1``, ``fe80::1%eth0``); IPv6 forms that reach
    an IPv4 address (``::ffff:127.0.0.1``, NAT64, 6to4) are that address's kind."""
    parsed = ipaddress.ip_address(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(parsed)
        if embedded is not None:
            return address_kind(str(embedded))
    for network, kind in _NETWORKS:
        if parsed.version == network.version and parsed in network:
            return kind
    # is_global alone misses multicast, IPv6 site-local and part of ::/8 on some Pythons.
    site_local = isinstance(parsed, ipaddress.IPv6Address) and parsed.is_site_local
    if not parsed.is_global or parsed.is_multicast or parsed.is_reserved or site_local:
        return AddressKind.SPECIAL
    return AddressKind.PUBLIC


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def vouched_kinds(sponsor_kinds: Collection[AddressKind]) -> frozenset[AddressKind]:
    """The kinds of address regfs may be sent to by a sponsor (and the hops after it)
    seen at ``sponsor_kinds``: public ones, their own kind, and private ones from loopback
    (a local proxy or cache in front of a LAN). Several kinds (a name that moved or
    rebinds, a public CDN between a local registry and its LAN) vouch for public addresses
    only, as does none at all."""
    if len(sponsor_kinds) != 1:
        return frozenset({AddressKind.PUBLIC})
    (kind,) = sponsor_kinds
    extra = {AddressKind.PRIVATE} if kind is AddressKind.LOOPBACK else set()
    return frozenset({AddressKind.PUBLIC, kind, *extra})


def refusal(
    addresses: Sequence[str], sponsor: str | None, sponsor_kinds: Collection[AddressKind]
) -> str | None:
    """Why a target whose host has ``addresses`` may not be sent to on behalf of
    ``sponsor`` (host[:port], None for no registry), whose answers (and those of the hops
    after it) came from ``sponsor_kinds``; None if every address may be."""
    allowed = vouched_kinds(sponsor_kinds)
    for address in addresses:
        kind = address_kind(address)
        if kind not in allowed:
            return f"{address} is a {kind.value} address, {_where(sponsor, sponsor_kinds)}"
    return None


def _where(sponsor: str | None, kinds: Collection[AddressKind]) -> str:
    if sponsor is None:
        return "and no registry named it"
    if not kinds:
        return f"and {sponsor} was not reached at any address yet"
    if len(kinds) == 1:
        return f"and {sponsor} is on a {next(iter(kinds)).value} address"
    named = " and ".join(sorted(kind.value for kind in kinds))
    return f"and the answers for {sponsor} came from {named} addresses"


def allowed_hosts(entries: Iterable[str]) -> frozenset[str]:
    """Hosts as the user wrote them (``HOST``, ``HOST:PORT``, ``[v6]``, ``[v6]:PORT``),
    in the form ``is_allowed`` compares: lower case, an IPv6 host without its port
    unbracketed."""
    normalised = set()
    for entry in entries:
        text = entry.strip().lower()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        if text:
            normalised.add(text)
    return frozenset(normalised)


def is_allowed(host: str, netloc: str, allowed: Collection[str]) -> bool:
    """Whether the user allowed the target ``host`` (any port) or ``netloc`` (host:port as
    in the URL, ``[v6]:port`` for IPv6)."""
    return host.lower() in allowed or netloc.lower() in allowed
