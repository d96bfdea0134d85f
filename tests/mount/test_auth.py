"""The anonymous Bearer token flow against registry:2 with ``auth: token``."""

from __future__ import annotations

import errno
import os

import pytest

from tests.support.mount import Mount
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


def test_tokens_are_reused_until_they_expire(
    mnt: Mount, token_registry: tuple[Registry, TokenServer]
) -> None:
    registry, tokens = token_registry
    os.listdir(mnt / registry.host / "public/img")
    before = len(tokens.requests)
    for _ in range(3):
        os.readlink(mnt / registry.host / "public/img/1")
        (mnt / registry.host / "public/img/1/manifest").read_bytes()
    assert len(tokens.requests) == before


def test_refused_repository_is_eacces(
    mnt: Mount, token_registry: tuple[Registry, TokenServer]
) -> None:
    registry, _ = token_registry
    mnt.allow_log(rf"{registry.host}/v2/private/img/tags/list: HTTP 401")
    with pytest.raises(OSError) as caught:
        os.listdir(mnt / registry.host / "private/img")
    assert caught.value.errno == errno.EACCES
    assert f"{registry.host}/v2/private/img/tags/list: HTTP 401" in mnt.log()
