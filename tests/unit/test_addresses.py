"""Where a registry may send regfs: address kinds, what a sponsor vouches for, allowed hosts."""

from __future__ import annotations

import pytest

from regfs.registry.addresses import (
    AddressKind,
    address_kind,
    allowed_hosts,
    is_allowed,
    refusal,
    vouched_kinds,
)

PUBLIC, PRIVATE, LOOPBACK, LINK_LOCAL, SPECIAL = (
    AddressKind.PUBLIC,
    AddressKind.PRIVATE,
    AddressKind.LOOPBACK,
    AddressKind.LINK_LOCAL,
    AddressKind.SPECIAL,
)


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("93.184.215.14", PUBLIC),
        ("8.8.8.8", PUBLIC),
        ("2606:4700::1111", PUBLIC),
        ("127.0.0.1", LOOPBACK),
        ("127.255.255.254", LOOPBACK),
        ("::1", LOOPBACK),
        ("169.254.169.254", LINK_LOCAL),  # the cloud metadata service
        ("169.254.0.1", LINK_LOCAL),
        ("fe80::1", LINK_LOCAL),
        ("fe80::1%eth0", LINK_LOCAL),  # with a scope, as getaddrinfo gives it
        ("fd00:ec2::254", LINK_LOCAL),  # AWS's IPv6 metadata service, in unique local
        ("fd00:ec2::253", PRIVATE),
        ("100.100.100.200", LINK_LOCAL),  # Alibaba's metadata service, in CGNAT
        ("10.0.0.1", PRIVATE),
        ("172.16.0.1", PRIVATE),
        ("172.31.255.255", PRIVATE),
        ("172.32.0.1", PUBLIC),  # just past 172.16.0.0/12
        ("192.168.1.1", PRIVATE),
        ("100.64.0.1", PRIVATE),  # CGNAT
        ("100.127.255.255", PRIVATE),
        ("100.128.0.1", PUBLIC),
        ("fc00::1", PRIVATE),
        ("fdff:ffff::1", PRIVATE),
        ("0.0.0.0", SPECIAL),  # connecting to it reaches this host
        ("0.1.2.3", SPECIAL),
        ("::", SPECIAL),
        ("255.255.255.255", SPECIAL),
        ("240.0.0.1", SPECIAL),
        ("224.0.0.1", SPECIAL),  # multicast
        ("ff02::1", SPECIAL),
        ("192.0.2.1", SPECIAL),  # documentation
        ("198.18.0.1", SPECIAL),  # benchmarking
        ("2001:db8::1", SPECIAL),
        ("fec0::1", SPECIAL),  # site-local, deprecated
        ("::7f00:1", SPECIAL),  # IPv4-compatible: not routed
        # IPv6 forms that reach an IPv4 address are that address's kind
        ("::ffff:127.0.0.1", LOOPBACK),
        ("::ffff:169.254.169.254", LINK_LOCAL),
        ("::ffff:a9fe:a9fe", LINK_LOCAL),
        ("::ffff:10.1.2.3", PRIVATE),
        ("::ffff:8.8.8.8", PUBLIC),
        ("64:ff9b::a9fe:a9fe", LINK_LOCAL),  # NAT64 of 169.254.169.254
        ("64:ff9b::808:808", PUBLIC),  # NAT64 of 8.8.8.8: IPv6-only networks need it
        ("2002:7f00:1::1", LOOPBACK),  # 6to4 of 127.0.0.1
        ("2002:c0a8:101::1", PRIVATE),  # 6to4 of 192.168.1.1
        ("2002:808:808::1", PUBLIC),
    ],
)
def test_address_kinds(address: str, kind: AddressKind) -> None:
    assert address_kind(address) is kind


@pytest.mark.parametrize(
    ("sponsor_kinds", "vouched"),
    [
        ({PUBLIC}, {PUBLIC}),
        ({PRIVATE}, {PUBLIC, PRIVATE}),
        ({LOOPBACK}, {PUBLIC, PRIVATE, LOOPBACK}),  # a local proxy in front of a LAN
        ({LINK_LOCAL}, {PUBLIC, LINK_LOCAL}),
        ({SPECIAL}, {PUBLIC, SPECIAL}),
        (set(), {PUBLIC}),  # never reached: its word counts for nothing more
        ({LOOPBACK, PUBLIC}, {PUBLIC}),  # a name that rebinds, or a public hop after it
        ({PRIVATE, LOOPBACK}, {PUBLIC}),
    ],
)
def test_what_a_sponsor_vouches_for(
    sponsor_kinds: set[AddressKind], vouched: set[AddressKind]
) -> None:
    assert vouched_kinds(sponsor_kinds) == vouched


@pytest.mark.parametrize(
    ("addresses", "sponsor", "kinds", "reason"),
    [
        (["93.184.215.14"], "origin.example", {PUBLIC}, None),
        (["93.184.215.14", "2606:4700::1111"], None, set(), None),
        (["127.0.0.1"], "127.0.0.1:5000", {LOOPBACK}, None),
        (["10.0.0.7"], "127.0.0.1:5000", {LOOPBACK}, None),
        (["10.0.0.7"], "registry.lan", {PRIVATE}, None),
        (
            ["169.254.169.254"],
            "origin.example",
            {PUBLIC},
            "169.254.169.254 is a link-local address, and origin.example is on a public address",
        ),
        (
            ["169.254.169.254"],
            "127.0.0.1:5000",
            {LOOPBACK},
            "169.254.169.254 is a link-local address, and 127.0.0.1:5000 is on a loopback address",
        ),
        (
            ["127.0.0.1"],
            "registry.lan",
            {PRIVATE},
            "127.0.0.1 is a loopback address, and registry.lan is on a private address",
        ),
        (  # every address counts, not only the first
            ["93.184.215.14", "::1"],
            "origin.example",
            {PUBLIC},
            "::1 is a loopback address, and origin.example is on a public address",
        ),
        (
            ["10.0.0.7"],
            "flappy.example",
            {PUBLIC, LOOPBACK},
            "10.0.0.7 is a private address, "
            "and the answers for flappy.example came from loopback and public addresses",
        ),
        (
            ["10.0.0.7"],
            "origin.example",
            set(),
            "10.0.0.7 is a private address, and origin.example was not reached at any address yet",
        ),
        (
            ["0.0.0.0"],
            None,
            set(),
            "0.0.0.0 is a special-purpose address, and no registry named it",
        ),
    ],
)
def test_refusals_name_the_address_and_the_sponsor(
    addresses: list[str], sponsor: str | None, kinds: set[AddressKind], reason: str | None
) -> None:
    assert refusal(addresses, sponsor, kinds) == reason


@pytest.mark.parametrize(
    ("entries", "host", "netloc", "allowed"),
    [
        (["cdn.lan"], "cdn.lan", "cdn.lan:8080", True),  # a host: any port
        (["CDN.lan"], "cdn.lan", "cdn.lan", True),
        (["cdn.lan:8080"], "cdn.lan", "cdn.lan:8080", True),
        (["cdn.lan:8080"], "cdn.lan", "cdn.lan:9090", False),
        (["cdn.lan"], "other.lan", "other.lan", False),
        (["169.254.169.254"], "169.254.169.254", "169.254.169.254", True),
        (["[fd00::1]"], "fd00::1", "[fd00::1]:443", True),
        (["fd00::1"], "fd00::1", "[fd00::1]:443", True),
        (["[fd00::1]:443"], "fd00::1", "[fd00::1]:443", True),
        (["[fd00::1]:443"], "fd00::1", "[fd00::1]:80", False),
        ([], "cdn.lan", "cdn.lan", False),
        ([" "], "", "", False),
    ],
)
def test_hosts_the_user_allowed(entries: list[str], host: str, netloc: str, allowed: bool) -> None:
    assert is_allowed(host, netloc, allowed_hosts(entries)) is allowed
