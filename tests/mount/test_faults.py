"""Faults injected between regfs and registry:2 on manifests, tag lists, blobs and the
token endpoint: each gives the right bytes after bounded retries, or a clean errno within
``--timeout``; the daemon lives on, and the first access after recovery works."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.mount.conftest import Pushed
from tests.support import images
from tests.support.mount import Mount
from tests.support.proxy import CountingProxy
from tests.support.registry import Registry
from tests.support.token_server import PUSHER, TokenServer

pytestmark = pytest.mark.mount

TIMEOUT = 3
WHERE = {"tag list": "/tags/list", "manifest": "/manifests/", "blob": "/blobs/"}


@pytest.fixture
def faulty(pushed: Pushed, tmp_path: Path) -> Iterator[tuple[CountingProxy, Mount]]:
    proxy = CountingProxy(pushed.registry.port)
    mount = Mount(tmp_path / "mnt", "--timeout", str(TIMEOUT))
    yield proxy, mount
    mount.close()
    proxy.stop()


def read_image(mount: Mount, proxy: CountingProxy) -> bytes:
    repository = mount / proxy.host / "library/debian"
    assert os.listdir(repository) == ["bookworm"]
    return (repository / "bookworm/rootfs/etc/os-release").read_bytes()


def read_file(mount: Mount, proxy: CountingProxy) -> bytes:
    return (mount / proxy.host / "library/debian/bookworm/rootfs/etc/os-release").read_bytes()


@pytest.mark.parametrize("fault", ["503", "429", "reset"])
@pytest.mark.parametrize("where", sorted(WHERE))
def test_a_passing_fault_is_retried_into_the_right_bytes(
    faulty: tuple[CountingProxy, Mount], where: str, fault: str
) -> None:
    proxy, mount = faulty
    proxy.faults = [(WHERE[where], fault)]
    assert read_image(mount, proxy) == Path("/etc/os-release").read_bytes()
    assert proxy.faults == []  # the fault was met, and survived


def list_repository(mount: Mount, proxy: CountingProxy) -> list[str]:
    return os.listdir(mount / proxy.host / "library/debian")


@pytest.mark.parametrize("where", sorted(WHERE))
def test_a_stall_is_a_clean_errno_in_time_and_recovery_works(
    faulty: tuple[CountingProxy, Mount], where: str
) -> None:
    """A stalled manifest or blob fails a read by path; a stalled tag list does not (the
    tag is asked for by itself), but fails the listing that needs it."""
    proxy, mount = faulty
    os.listdir(mount / proxy.host / "library")  # the catalog (61 pages), before the clock
    if where != "tag list":
        list_repository(mount, proxy)
    proxy.stall_seconds = 2 * TIMEOUT
    proxy.faults = [(WHERE[where], "stall")] * 8  # every attempt stalls
    mount.allow_log(rf"{proxy.host}.*{WHERE[where]}.*no answer within {TIMEOUT}s")
    stalled = read_file
    if where == "tag list":
        start = time.monotonic()
        assert read_file(mount, proxy) == Path("/etc/os-release").read_bytes()
        assert time.monotonic() - start < TIMEOUT
        stalled = list_repository
    start = time.monotonic()
    with pytest.raises(OSError) as caught:
        stalled(mount, proxy)
    took = time.monotonic() - start
    assert caught.value.errno == errno.EIO
    proxy.faults = []
    proxy.end_stalls()  # the stalled attempts end now
    assert read_image(mount, proxy) == Path("/etc/os-release").read_bytes()
    assert took < TIMEOUT + 2, took


@pytest.mark.parametrize("damage", ["corrupt", "truncate", "trickle"])
@pytest.mark.parametrize("where", sorted(WHERE))
def test_a_damaged_answer_is_never_served_and_recovery_works(
    faulty: tuple[CountingProxy, Mount], where: str, damage: str
) -> None:
    """One answer corrupted, cut short or trickled: the read gets the right bytes (after a
    retry) or EIO within the timeout, never other bytes; the next read works."""
    proxy, mount = faulty
    os.listdir(mount / proxy.host / "library")  # the catalog (61 pages), before the clock
    proxy.faults = [(WHERE[where], damage)]
    mount.allow_log(rf"{proxy.host}.*({WHERE[where]}|library/debian)")
    expected = Path("/etc/os-release").read_bytes()
    start = time.monotonic()
    try:
        assert read_image(mount, proxy) == expected
    except OSError as error:
        assert error.errno == errno.EIO
    took = time.monotonic() - start
    assert proxy.faults == []
    assert took < TIMEOUT + 2, took
    assert read_image(mount, proxy) == expected


def test_a_registry_killed_and_restarted(tmp_path: Path, layout: Path) -> None:
    """While the registry is down, reads are a clean EIO in time; once it is back, the
    same paths work, in the same mount."""
    registry = Registry(tmp_path / "registry")
    try:
        images.push(layout, "base", f"{registry.host}/crash/app:1")
        mount = Mount(tmp_path / "mnt", "--timeout", str(TIMEOUT))
        mount.allow_log(rf"{registry.host}.*ConnectError")
        try:
            app = mount / registry.host / "crash/app"
            assert os.listdir(app) == ["1"]
            registry.kill()
            start = time.monotonic()
            with pytest.raises(OSError) as caught:
                (app / "1/rootfs/etc/os-release").read_bytes()
            assert caught.value.errno == errno.EIO and time.monotonic() - start < TIMEOUT + 2
            registry.start()
            expected = Path("/etc/os-release").read_bytes()
            assert (app / "1/rootfs/etc/os-release").read_bytes() == expected
        finally:
            mount.close()
    finally:
        registry.stop()


@pytest.fixture(scope="module")
def token_proxy(workdir: Path, layout: Path) -> Iterator[tuple[Registry, CountingProxy]]:
    """registry:2 with ``auth: token`` whose realm is a fault proxy in front of the token
    server: what regfs meets when a token service (Docker Hub's auth.docker.io) fails."""
    tokens = TokenServer(workdir / "faulty-tokens")
    proxy = CountingProxy(tokens.port)
    realm = f"http://{proxy.host}/token"
    registry = Registry(workdir / "faulty-token-registry", token=replace(tokens.auth, realm=realm))
    images.push(layout, "base", f"{registry.host}/public/img:1", "--dest-creds", ":".join(PUSHER))
    yield registry, proxy
    registry.stop()
    proxy.stop()
    tokens.stop()


def read_through_tokens(mount: Mount, registry: Registry) -> bytes:
    return (mount / registry.host / "public/img/1/rootfs/etc/os-release").read_bytes()


@pytest.mark.parametrize("fault", ["503", "429", "reset"])
def test_a_token_endpoint_fault_is_retried_into_the_right_bytes(
    token_proxy: tuple[Registry, CountingProxy], tmp_path: Path, fault: str
) -> None:
    registry, proxy = token_proxy
    mount = Mount(tmp_path / "mnt", "--timeout", str(TIMEOUT))  # its own: no token cached yet
    try:
        proxy.faults = [("/token", fault)] * 2
        assert read_through_tokens(mount, registry) == Path("/etc/os-release").read_bytes()
        assert proxy.faults == []
    finally:
        mount.close()


def test_a_stalled_token_endpoint_is_eio_in_time_and_recovery_works(
    token_proxy: tuple[Registry, CountingProxy], tmp_path: Path
) -> None:
    registry, proxy = token_proxy
    mount = Mount(tmp_path / "mnt", "--timeout", str(TIMEOUT))
    mount.allow_log(rf"{registry.host}.*no answer within {TIMEOUT}s")
    try:
        proxy.stall_seconds = 2 * TIMEOUT
        proxy.faults = [("/token", "stall")] * 8
        start = time.monotonic()
        with pytest.raises(OSError) as caught:
            read_through_tokens(mount, registry)
        took = time.monotonic() - start
        assert caught.value.errno == errno.EIO and took < TIMEOUT + 2, took
        proxy.faults = []
        proxy.end_stalls()
        assert read_through_tokens(mount, registry) == Path("/etc/os-release").read_bytes()
    finally:
        mount.close()
