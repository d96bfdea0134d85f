"""Registry down, nothing lost: what one mount read, the next serves with the registry gone.

A registry:2 of this module's own (stopped and started again by the tests) holds one image
in four forms: plain gzip, eStargz, zstd:chunked and gzip with a SOCI v1 index. A first
mount reads a file of each (by tag); the registry is stopped; a second mount on the same
cache dir must show it all again, by tag and by digest, with the listings marked stale.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.mount.conftest import BASIC_USER
from tests.mount.test_credentials import auth_json
from tests.mount.test_errors import expect_errno
from tests.mount.test_system_mounts import service_commands, unit
from tests.support import images
from tests.support.estargz import EstargzConverter
from tests.support.mount import Mount, clean_environment, run_regfs
from tests.support.proxy import CountingProxy
from tests.support.registry import Registry

TIMEOUT = 5
MOTD = b"read while the registry was there\n"
NEVER_READ = os.urandom(2 << 20)  # incompressible: chunks and spans of its own
FILES = {"etc/motd": MOTD, "usr/lib/never-read": NEVER_READ}
FORMATS = ("gzip", "estargz", "zstd-chunked", "soci")
LAZY = ("estargz",)
"""Forms whose first read above leaves ``NEVER_READ`` unfetched (a SOCI span and skopeo's
zstd:chunked chunk of this small image hold both files)."""
pytestmark = pytest.mark.mount
UNREACHABLE = (r"cannot be reached", r"Connection refused|connect|no answer within")


@dataclass
class Outage:
    registry: Registry
    layout: Path
    """The OCI layout the gzip image was pushed from (to put its tag back)."""

    @property
    def host(self) -> str:
        return self.registry.host


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory, estargz: EstargzConverter) -> Iterator[Outage]:
    work = tmp_path_factory.mktemp("outage")
    images.build_image(work / "oci", "1", FILES)
    registry = Registry(work / "registry")
    host = registry.host
    images.push(work / "oci", "1", f"{host}/offline/gzip:1")
    images.push(work / "oci", "1", f"{host}/offline/zstd-chunked:1",
                "--dest-compress-format", "zstd:chunked")  # fmt: skip
    estargz.push(work / "oci", "1", f"{host}/offline/estargz:1")
    # a layer of its own: one shared with the gzip image would be read through its index
    images.build_image(work / "soci", "1", {**FILES, "etc/form": b"soci\n"})
    images.push(work / "soci", "1", f"{host}/offline/soci:1")
    result = run_regfs("index", "push", "--span-size", "1M", "--min-layer-size", "0",
                       f"{host}/offline/soci:1", timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    outage = Outage(registry, work / "oci")
    yield outage
    registry.stop()


@pytest.fixture
def registry_back(outage: Outage) -> Iterator[Registry]:
    """The registry, started again after the test if the test killed it."""
    yield outage.registry
    outage.registry.start_if_killed()


def mount_on(
    cache: Path, where: Path, *options: str, environment: dict[str, str] | None = None
) -> Mount:
    return Mount(where, "--timeout", str(TIMEOUT), "--cache-dir", str(cache),
                 "--soci-v1-referrers", *options, environment=environment)  # fmt: skip


def read_first(cache: Path, where: Path, host: str) -> dict[str, str]:
    """A first mount reads ``etc/motd`` of each form by tag; the digest dir of each."""
    first = mount_on(cache, where)
    try:
        assert set(os.listdir(first / host / "offline")) == set(FORMATS)
        digests = {}
        for form in FORMATS:
            assert os.listdir(first / host / "offline" / form) == ["1"]
            assert (first / host / "offline" / form / "1/rootfs/etc/motd").read_bytes() == MOTD
            digests[form] = os.readlink(first / host / "offline" / form / "1")
        return digests
    finally:
        first.close()


def stale_marks(path: Path) -> dict[str, object]:
    return json.loads(os.getxattr(path, "user.regfs.stale"))


def test_a_remount_with_the_registry_stopped_serves_what_was_read(
    tmp_path: Path, outage: Outage, registry_back: Registry
) -> None:
    host = outage.host
    digests = read_first(tmp_path / "cache", tmp_path / "first", host)
    registry_back.kill()
    second = mount_on(tmp_path / "cache", tmp_path / "second")
    second.allow_log(*UNREACHABLE)
    try:
        repository = second / host / "offline"
        assert set(os.listdir(second / host)) == {"offline"}
        assert set(os.listdir(repository)) == set(FORMATS)
        for form in FORMATS:
            image = repository / form
            assert os.listdir(image) == ["1"]
            assert os.readlink(image / "1") == digests[form]
            assert (image / "1/rootfs/etc/motd").read_bytes() == MOTD, form
            assert (image / digests[form] / "rootfs/etc/motd").read_bytes() == MOTD, form
            assert json.loads((image / "1/manifest").read_bytes())["layers"]
            assert set(stale_marks(image)) == {"tags", "targets"}
            assert set(stale_marks(image)["targets"]) == {"1"}  # type: ignore[arg-type]
        assert set(stale_marks(second / host)) == {"catalog"}
        for form in LAZY:  # never fetched: EIO within the timeout, not a hang
            never = repository / form / "1/rootfs/usr/lib/never-read"
            took = expect_errno(errno.EIO, never.read_bytes)
            assert took < TIMEOUT + 1, form
        status = json.loads(os.getxattr(second.path, "user.regfs.status"))
        assert status["stale_answers"]["now"] >= 1 + 2 * len(FORMATS)
        assert host in status["unreachable"]
    finally:
        second.close()


def test_a_tag_followed_by_path_alone_keeps_its_repository_s_listing(
    tmp_path: Path, outage: Outage, registry_back: Registry
) -> None:
    """The first mount never lists the repository: it reads a file through ``REPO/TAG``,
    which asks for the tag alone and reads the tag list behind it. That list is kept all
    the same: with the registry gone, ``ls REPO`` shows the tag."""
    host = outage.host
    first = mount_on(tmp_path / "cache", tmp_path / "first")
    try:
        assert (first / host / "offline/gzip/1/rootfs/etc/motd").read_bytes() == MOTD
        time.sleep(0.2)  # the list, asked with the tag, came long before the layer
    finally:
        first.close()
    registry_back.kill()
    second = mount_on(tmp_path / "cache", tmp_path / "second")
    second.allow_log(*UNREACHABLE)
    try:
        assert os.listdir(second / host / "offline/gzip") == ["1"]
        assert (second / host / "offline/gzip/1/rootfs/etc/motd").read_bytes() == MOTD
    finally:
        second.close()


def test_the_registry_back_brings_fresh_answers_and_a_moved_tag(
    tmp_path: Path, outage: Outage, registry_back: Registry
) -> None:
    host = outage.host
    read_first(tmp_path / "cache", tmp_path / "first", host)
    registry_back.kill()
    second = mount_on(tmp_path / "cache", tmp_path / "second", "--metadata-ttl", "1")
    second.allow_log(*UNREACHABLE)
    try:
        image = second / host / "offline/gzip"
        before = os.readlink(image / "1")
        assert "targets" in stale_marks(image)
        registry_back.start()
        layout = tmp_path / "moved"
        images.build_image(layout, "1", {**FILES, "etc/motd": b"moved\n"})
        images.push(layout, "1", f"{host}/offline/gzip:1")
        deadline = time.monotonic() + 30  # the metadata TTL, the recheck of the host, a slow CI
        while os.readlink(image / "1") == before and time.monotonic() < deadline:
            time.sleep(0.5)
        assert (image / "1/rootfs/etc/motd").read_bytes() == b"moved\n"
        assert os.listdir(image) == ["1"] and "offline" in os.listdir(second / host)
        assert "user.regfs.stale" not in os.listxattr(image)
        assert "user.regfs.stale" not in os.listxattr(second / host)
        assert second.log().count("answers again") >= 1
    finally:
        second.close()
        images.push(outage.layout, "1", f"{host}/offline/gzip:1")


def test_a_fleet_mount_serves_its_cache_with_mirror_and_registry_both_gone(
    tmp_path: Path, outage: Outage, registry_back: Registry
) -> None:
    """A fleet's name in registries.conf, served through a pull-through mirror: with the
    mirror and the registry both stopped, a remount serves what the first mount read."""
    mirror = Registry(tmp_path / "mirror", proxy_remote=outage.registry.url)
    counting = CountingProxy(mirror.port)
    home = tmp_path / "home"
    (home / ".config/containers").mkdir(parents=True)
    (home / ".config/containers/registries.conf").write_text(f"""
[[registry]]
prefix = "fleet.example"
location = "{outage.host}"
[[registry.mirror]]
location = "{counting.host}"
""")  # fmt: skip
    environment = {"HOME": str(home)}
    first = mount_on(tmp_path / "cache", tmp_path / "first", environment=environment)
    try:
        assert "offline" in os.listdir(first / "fleet.example")
        repository = first / "fleet.example/offline/gzip"
        assert (repository / "1/rootfs/etc/motd").read_bytes() == MOTD
        digest = os.readlink(repository / "1")
        assert any("/blobs/" in path for path in counting.requests_by_path), "no mirror"
    finally:
        first.close()
    counting.stop()
    mirror.stop()
    registry_back.kill()
    second = mount_on(tmp_path / "cache", tmp_path / "second", environment=environment)
    second.allow_log(*UNREACHABLE)
    try:
        repository = second / "fleet.example/offline/gzip"
        assert os.listdir(repository) == ["1"]
        assert os.readlink(repository / "1") == digest
        assert (repository / "1/rootfs/etc/motd").read_bytes() == MOTD
        assert (repository / digest / "rootfs/etc/motd").read_bytes() == MOTD
        assert set(stale_marks(repository)) == {"tags", "targets"}
        assert "offline" in os.listdir(second / "fleet.example")
        assert set(stale_marks(second / "fleet.example")) == {"catalog"}
    finally:
        second.close()


def test_without_stale_answers_listings_and_tags_fail(
    tmp_path: Path, outage: Outage, registry_back: Registry
) -> None:
    """``--no-stale``: EIO where the last answer would have been shown (a digest dir of a
    repository the host dir can name still reads: tests/component/test_offline.py)."""
    host = outage.host
    read_first(tmp_path / "cache", tmp_path / "first", host)
    registry_back.kill()
    second = mount_on(tmp_path / "cache", tmp_path / "second", "--no-stale")
    second.allow_log(*UNREACHABLE)
    try:
        expect_errno(errno.EIO, lambda: os.listdir(second / host))
        expect_errno(errno.EIO, lambda: os.listdir(second / host / "offline" / "soci"))
        expect_errno(errno.EIO, lambda: os.readlink(second / host / "offline/gzip/1"))
        status = json.loads(os.getxattr(second.path, "user.regfs.status"))
        assert status["stale_answers"] == {"now": 0, "served": 0}
    finally:
        second.close()


def test_revoked_credentials_are_eacces_not_stale(tmp_path: Path, basic_registry: Registry) -> None:
    """A registry that answers 401 is reachable: nothing is served from the cache."""
    host = basic_registry.host
    good = auth_json(tmp_path / "good.json", host, BASIC_USER.username, BASIC_USER.password)
    revoked = auth_json(tmp_path / "revoked.json", host, BASIC_USER.username, "revoked")
    first = Mount(tmp_path / "first", "--cache-dir", str(tmp_path / "cache"),
                  "--auth-file", str(good))  # fmt: skip
    try:
        motd = first / host / "solo/1/rootfs/etc/os-release"
        content = motd.read_bytes()
        digest = os.readlink(first / host / "solo/1")
    finally:
        first.close()
    assert content
    second = Mount(tmp_path / "second", "--cache-dir", str(tmp_path / "cache"),
                   "--auth-file", str(revoked))  # fmt: skip
    second.allow_log(r"401|refused|denied|unauthorized")
    try:
        expect_errno(errno.EACCES, lambda: os.listdir(second / host / "solo"))
        by_digest = second / host / "solo" / digest / "rootfs/etc/os-release"
        expect_errno(errno.EACCES, by_digest.read_bytes)
    finally:
        second.close()


def run_service(mountpoint: Path, cache: Path, notify: Path) -> subprocess.Popen[str]:
    """The unit's start as systemd runs it: each ``ExecStartPre`` (failures of ``-`` ones
    ignored), then ``ExecStart`` in the foreground with ``NOTIFY_SOCKET``."""
    for command in service_commands("ExecStartPre", mountpoint, cache):
        ignored = command[0] == "-"
        result = subprocess.run(command[ignored:], capture_output=True, check=False,
                                env=clean_environment())  # fmt: skip
        assert ignored or result.returncode == 0, result.stderr
    (command,) = service_commands("ExecStart", mountpoint, cache)
    environment = {**clean_environment(), "NOTIFY_SOCKET": str(notify)}
    return subprocess.Popen(command, env=environment, stderr=subprocess.PIPE, text=True)


def test_the_service_restarted_after_kill_9_serves_the_cache_at_once(
    tmp_path: Path, outage: Outage, registry_back: Registry
) -> None:
    """``contrib/regfs.service`` after the daemon is killed (``Restart=on-failure``): its
    dead mount is cleared and the restarted mount serves what was read, registry gone."""
    motd = tmp_path / "mnt" / outage.host / "offline/gzip/1/rootfs/etc/motd"
    cache = tmp_path / "cache"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(tmp_path / "notify"))
        listener.settimeout(30)
        first = run_service(tmp_path / "mnt", cache, tmp_path / "notify")
        assert listener.recv(100) == b"READY=1"
        assert motd.read_bytes() == MOTD
        registry_back.kill()
        killed = time.monotonic()
        first.kill()  # kill -9
        first.communicate()
        second = run_service(tmp_path / "mnt", cache, tmp_path / "notify")
        try:
            assert listener.recv(100) == b"READY=1"
            assert motd.read_bytes() == MOTD
            gap = time.monotonic() - killed
            restart_delay = float(unit("regfs.service")["Service"]["RestartSec"])
            print(f"kill -9 to a working read: {gap:.2f} s, and systemd's {restart_delay} s")
            assert gap < TIMEOUT
        finally:
            second.send_signal(signal.SIGTERM)
            _, log = second.communicate(timeout=30)
            assert "Traceback" not in log, log
    assert not os.path.ismount(tmp_path / "mnt")


def test_a_prefetched_image_reads_with_the_registry_away(
    tmp_path: Path, outage: Outage, registry_back: Registry
) -> None:
    """``regfs prefetch`` keeps all a mount needs: manifests, config, the tag and its list."""
    host = outage.host
    cache = tmp_path / "cache"
    for form in ("gzip", "estargz"):
        fetched = run_regfs("prefetch", "--quiet", "--cache-dir", str(cache),
                            f"{host}/offline/{form}:1", timeout=120)  # fmt: skip
        assert fetched.returncode == 0, fetched.stderr
    registry_back.kill()
    mount = mount_on(cache, tmp_path / "mnt")
    mount.allow_log(*UNREACHABLE)
    try:
        for form in ("gzip", "estargz"):
            image = mount / host / "offline" / form / "1"
            assert (image / "rootfs/etc/motd").read_bytes() == MOTD
            assert (image / "rootfs/usr/lib/never-read").read_bytes() == NEVER_READ
            assert json.loads((image / "config").read_bytes())["rootfs"]
    finally:
        mount.close()
