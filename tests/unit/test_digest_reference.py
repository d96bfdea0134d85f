from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regfs.domain.digest import Digest
from regfs.domain.errors import MalformedContent
from regfs.domain.reference import (
    api_host,
    api_repository,
    is_loopback,
    is_registry_host,
    is_repository,
    is_repository_component,
    is_tag,
    split_host_port,
)

HEX = "3f1c" + "0" * 60


def test_digest_round_trips_through_text_and_dir_name() -> None:
    digest = Digest.parse(f"sha256:{HEX}")
    assert str(digest) == f"sha256:{HEX}"
    assert digest.dir_name == f"sha256-{HEX}"
    assert Digest.from_dir_name(digest.dir_name) == digest


@pytest.mark.parametrize(
    "text",
    ["", "sha256:", f"sha256:{HEX}0", f"sha256:{HEX[:-1]}", f"SHA256:{HEX}", f"md5:{HEX}",
     f"sha256:{HEX.upper()}", f" sha256:{HEX}", "sha512:" + "a" * 64],
)  # fmt: skip
def test_bad_digests_are_refused(text: str) -> None:
    with pytest.raises(MalformedContent):
        Digest.parse(text)


@pytest.mark.parametrize(
    "name", ["sha256-abc", "sha256:" + HEX, "latest", "sha256-" + HEX + "0", f"sha256-{HEX}\n"]
)
def test_other_names_are_not_digest_dirs(name: str) -> None:
    assert Digest.from_dir_name(name) is None


def test_digest_of_and_matches() -> None:
    digest = Digest.of(b"hello")
    assert digest.hex == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert digest.matches(b"hello") and not digest.matches(b"hello!")


@pytest.mark.parametrize("name", ["library", "my-app", "a.b_c", "a__b", "x0", "a--b"])
def test_valid_repository_components(name: str) -> None:
    assert is_repository_component(name)


@pytest.mark.parametrize(
    "name",
    ["", "Library", "-a", "a-", "a..b", "a/b", ".", "..", "a___b", "a\n", "a\x00b", "a b", "é"],
)
def test_invalid_repository_components(name: str) -> None:
    assert not is_repository_component(name)


def test_repository_names_have_a_length_limit() -> None:
    assert is_repository("a/b/c")
    assert not is_repository("a" * 256)


@pytest.mark.parametrize("name", ["a//b", "/a", "a/", "a/../b", "a/./b", "..", "a/b\n", ""])
def test_invalid_repository_names(name: str) -> None:
    assert not is_repository(name)


@given(st.text(alphabet=st.sampled_from("ab0./_-\n\x00:%?#Aé "), max_size=40))
def test_valid_names_are_safe_in_paths_and_urls(name: str) -> None:
    """What passes the grammar can be a directory entry and a URL path unquoted."""
    if is_repository(name):
        components = name.split("/")
        assert all(c and c not in (".", "..") for c in components)
        assert quote(name, safe="/") == name and "\x00" not in name
    if is_tag(name):
        assert "/" not in name and name not in (".", "..") and quote(name, safe="") == name
    with pytest.raises(MalformedContent):
        Digest.parse(f"sha256:{HEX}{name}\n")


@pytest.mark.parametrize(("name", "valid"), [("latest", True), ("v1.2-rc_3", True),
    ("_x", True), (".x", False), ("-x", False), ("a" * 128, True), ("a" * 129, False),
    ("a/b", False), ("", False), ("v1\n", False), ("v\x001", False), ("..", False),
    ("ümlaut", False)])  # fmt: skip
def test_tags(name: str, valid: bool) -> None:
    assert is_tag(name) is valid


@pytest.mark.parametrize(
    ("name", "parts"),
    [("localhost", ("localhost", None)), ("127.0.0.1:5000", ("127.0.0.1", 5000)),
     ("[::1]:5000", ("::1", 5000)), ("[::1]", ("::1", None)), ("ghcr.io", ("ghcr.io", None)),
     ("host:0", None), ("host:65536", None), ("host:x", None), ("[nope]:1", None),
     ("a_b.com", None), ("[::1]x", None)],
)  # fmt: skip
def test_split_host_port(name: str, parts: tuple[str, int | None] | None) -> None:
    assert split_host_port(name) == parts


@pytest.mark.parametrize(("name", "is_host"), [("localhost", True), ("ghcr.io", True),
    ("myhost:5000", True), ("[::1]:5000", True), ("library", False), (".git", False),
    ("autorun.inf", True), ("", False)])  # fmt: skip
def test_registry_hosts_need_a_dot_a_port_or_localhost(name: str, is_host: bool) -> None:
    assert is_registry_host(name) is is_host


@pytest.mark.parametrize(("host", "loopback"), [("localhost", True), ("127.0.0.1", True),
    ("127.8.9.10", True), ("::1", True), ("10.0.0.1", False), ("example.com", False)])  # fmt: skip
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_docker_hub_aliases() -> None:
    assert api_host("docker.io") == "registry-1.docker.io"
    assert api_host("ghcr.io") == "ghcr.io"
    assert api_repository("docker.io", "debian") == "library/debian"
    assert api_repository("docker.io", "bitnami/redis") == "bitnami/redis"
    assert api_repository("ghcr.io", "debian") == "debian"
