"""The anonymous Bearer token flow against registry:2 with ``auth: token``."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

from tests.mount.conftest import BASIC_USER
from tests.support.fake_registry import FakeRegistry, Reply
from tests.support.mount import Mount
from tests.support.proxy import CountingProxy
from tests.support.registry import Registry
from tests.support.token_server import TokenServer

pytestmark = pytest.mark.mount


def test_catalog_tags_and_manifests_through_tokens(
    mnt: Mount, token_registry: tuple[Registry, TokenServer]
) -> None:
    registry, tokens = token_registry
    host = mnt / registry.host
    assert sorted(os.listdir(host)) == ["private", "public"]
    assert os.listdir(host / "public/img") == ["1"]
    assert b'"schemaVersion"' in (host / "public/img/1/manifest").read_bytes()
    assert (host / "public/img/1/config").read_bytes().startswith(b"{")
    scopes = [scope for request in tokens.requests for scope in request.get("scope", [])]
    assert "registry:catalog:*" in scopes
    assert "repository:public/img:pull" in scopes


def test_one_token_serves_many_registry_requests(
    tmp_path: Path, token_registry: tuple[Registry, TokenServer]
) -> None:
    """Each readlink re-resolves the tag at the registry (a short metadata TTL), and every
    one of those requests goes out with the token fetched for the first.
    (Expiry and renewal are checked on a fake clock: tests/component/test_client.py.)"""
    registry, tokens = token_registry
    proxy = CountingProxy(registry.port)
    mount = Mount(tmp_path / "mnt", "--metadata-ttl", "0.1")
    try:
        tag = mount / proxy.host / "public/img/1"
        os.readlink(tag)
        before = len(tokens.requests)
        for _ in range(3):
            time.sleep(0.2)  # past the TTL: the daemon asks the registry again
            os.readlink(tag)
        assert proxy.requests_by_path["/v2/public/img/manifests/1"] >= 4
        assert len(tokens.requests) == before
    finally:
        mount.close()
        proxy.stop()


def test_refused_repository_and_names_below_it_are_eacces(
    mnt: Mount, token_registry: tuple[Registry, TokenServer]
) -> None:
    """Token auth refusing the anonymous scope: the repository and any name in it."""
    registry, _ = token_registry
    mnt.allow_log(rf"{registry.host}/v2/private/img/tags/list with no credentials: HTTP 401",
                  rf"{registry.host}/private/img: '1' refused")  # fmt: skip
    for action in (os.listdir, os.stat):
        path = mnt / registry.host / ("private/img" if action is os.listdir else "private/img/1")
        with pytest.raises(OSError) as caught:
            action(path)
        assert caught.value.errno == errno.EACCES
    assert f"{registry.host}/v2/private/img/tags/list with no credentials: HTTP 401" in mnt.log()


def test_a_refused_tag_or_repository_is_eacces_not_a_directory(
    mnt: Mount, basic_registry: Registry
) -> None:
    """htpasswd registry, no credentials: whatever asks the registry is EACCES."""
    host = mnt / basic_registry.host
    refused = rf"{basic_registry.host}/(solo|team)\S*: '\w+' refused: .*HTTP 401"
    listing = rf"readdir: GET http://{basic_registry.host}/v2/(solo|team/app)/tags/list with no"
    mnt.allow_log(refused, listing)
    for action in (
        (host / "solo/1/manifest").read_bytes,
        lambda: os.listdir(host / "solo/1"),
        lambda: os.stat(host / "solo/1"),
        lambda: os.listdir(host / "solo"),
        lambda: os.readlink(host / "team/app/1"),
        lambda: os.listdir(host / "team/app"),
    ):
        with pytest.raises(OSError) as caught:
            action()
        assert caught.value.errno == errno.EACCES, caught.value
    assert f"{basic_registry.host}/solo: '1' refused" in mnt.log()
    assert BASIC_USER.password not in mnt.log()
    assert os.listdir(host) == []  # a refused catalog is no catalog: names can still be tried


def test_a_refused_prefix_still_leads_to_a_repository_that_answers(mnt: Mount) -> None:
    """Docker Hub's way: unknown or private names are 401, ``org`` is not a repository,
    but ``org/app`` answers: the refusal of ``org`` must not hide ``org/app``."""
    refused = Reply(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}')
    fake = FakeRegistry({
        "/v2/_catalog": refused, "/v2/org/tags/list": refused, "/v2/org/manifests/app": refused,
        "/v2/org/app/tags/list": Reply(200, b'{"name":"org/app","tags":["v1"]}'),
    })  # fmt: skip
    try:
        assert os.listdir(mnt / fake.host / "org/app") == ["v1"]
        assert os.listdir(mnt / fake.host / "org") == ["app"]  # known now, though refused
    finally:
        fake.stop()
