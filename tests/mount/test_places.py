"""registries.conf and certs.d as podman reads them, against real registry:2 instances:
a pull-through cache as a fleet's mirror, blocked names, TLS with a CA and a client
certificate of the tests' own. Every file lives in a temp HOME."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mount.conftest import Layered, Pushed
from tests.support import images
from tests.support.mount import Mount, run_regfs
from tests.support.net import free_port
from tests.support.pki import Authority
from tests.support.proxy import CountingProxy
from tests.support.registry import Registry, ServerTls

pytestmark = pytest.mark.mount


def home_with(tmp_path: Path, registries_conf: str = "") -> Path:
    home = tmp_path / "home"
    (home / ".config/containers").mkdir(parents=True)
    if registries_conf:
        (home / ".config/containers/registries.conf").write_text(registries_conf)
    return home


def test_a_pull_through_mirror_serves_and_the_registry_takes_over_when_it_stops(
    tmp_path: Path, pushed: Pushed
) -> None:
    origin = pushed.registry
    mirror = Registry(tmp_path / "mirror", proxy_remote=origin.url)  # registry:2 proxy mode
    counting = CountingProxy(mirror.port)
    home = home_with(tmp_path, f"""
[[registry]]
prefix = "fleet.example"
location = "{origin.host}"
[[registry.mirror]]
location = "{counting.host}"
""")  # fmt: skip
    mount = Mount(tmp_path / "mnt", "--timeout", "5", environment={"HOME": str(home)})
    try:
        fleet = mount / "fleet.example"
        image = fleet / "library/debian/bookworm"
        assert (image / "rootfs/etc/os-release").read_bytes() == Path(
            "/etc/os-release"
        ).read_bytes()
        served = [path for path in counting.requests_by_path if "/blobs/" in path]
        assert served, "the mirror served the layer and the config"
        assert "library" in os.listdir(fleet)  # the catalog comes from the location
        counting.truncate = True  # the mirror breaks off every blob midway
        arch = fleet / "multi/app/latest/linux-arm64-v8/rootfs/etc/arch"
        assert arch.read_bytes() == b"arm64\n"  # the download started over at the registry
        counting.stop()
        mirror.stop()  # the mirror disappears: the registry itself serves from now on
        other = fleet / "formats/v2s2/latest/rootfs/usr/share/common-licenses/GPL-3"
        assert other.read_bytes() == Path("/usr/share/common-licenses/GPL-3").read_bytes()
        assert "mirror 127.0.0.1" in mount.log()
        assert " bytes: RemoteProtocolError" in mount.log()  # the mid-read break, logged
    finally:
        mount.close()


def test_mirror_by_digest_only_keeps_a_tag_off_a_stale_mirror(tmp_path: Path) -> None:
    """Two registries whose app:1 differ: by tag, skopeo and regfs both read the origin's."""
    layout = tmp_path / "oci"
    images.build_image(layout, "fresh", {"etc/which": b"origin\n"})
    images.build_image(layout, "stale", {"etc/which": b"mirror\n"})
    origin, mirror = Registry(tmp_path / "origin"), Registry(tmp_path / "mirror")
    try:
        images.push(layout, "fresh", f"{origin.host}/app:1")
        images.push(layout, "stale", f"{mirror.host}/app:1")
        home = home_with(tmp_path, f"""
[[registry]]
prefix = "fleet.example"
location = "{origin.host}"
insecure = true
mirror-by-digest-only = true
[[registry.mirror]]
location = "{mirror.host}"
insecure = true
""")  # fmt: skip
        inspected = subprocess.run(
            ["skopeo", "inspect", "--raw", "docker://fleet.example/app:1"],
            capture_output=True, check=True, env={**os.environ, "HOME": str(home)},
        )  # fmt: skip
        assert inspected.stdout == images.get_manifest(origin.url, "app", "1")[0]
        mount = Mount(tmp_path / "mnt", environment={"HOME": str(home)})
        try:
            assert (mount / "fleet.example/app/1/rootfs/etc/which").read_bytes() == b"origin\n"
        finally:
            mount.close()
    finally:
        origin.stop()
        mirror.stop()


@pytest.mark.parametrize("by_digest_only", [False, True])
def test_a_mirror_serves_while_the_registry_itself_is_down(
    tmp_path: Path, by_digest_only: bool
) -> None:
    """An air-gapped node whose registries.conf names a mirror of a registry it cannot
    reach: podman pulls through the mirror, and so must the mount's paths. The registry's
    catalog cannot be had, so names are taken as where no catalog is offered; by digest
    only, a digest dir is reached all the same (its tags need the registry)."""
    layout = tmp_path / "oci"
    images.build_image(layout, "img", {"etc/which": b"mirror\n"})
    mirror = Registry(tmp_path / "mirror")
    try:
        images.push(layout, "img", f"{mirror.host}/team/app:1")
        manifest, _, _ = images.get_manifest(mirror.url, "team/app", "1")
        digest_dir = "sha256-" + hashlib.sha256(manifest).hexdigest()
        home = home_with(tmp_path, f"""
[[registry]]
prefix = "fleet.example"
location = "127.0.0.1:{free_port()}"
mirror-by-digest-only = {str(by_digest_only).lower()}
[[registry.mirror]]
location = "{mirror.host}"
""")  # fmt: skip
        mount = Mount(tmp_path / "mnt", "--timeout", "5", environment={"HOME": str(home)})
        mount.allow_log(r"WARNING .*127\.0\.0\.1:\d+.*(refused|unreachable|answer)")
        try:
            app = mount / "fleet.example/team/app"
            assert (app / digest_dir / "rootfs/etc/which").read_bytes() == b"mirror\n"
            if not by_digest_only:
                assert (app / "1/rootfs/etc/which").read_bytes() == b"mirror\n"
        finally:
            mount.close()
    finally:
        mirror.stop()


def test_docker_hub_rewritten_to_a_local_registry_keeps_library(tmp_path: Path) -> None:
    """An air-gapped copy of Docker Hub: every spelling of docker.io/library/debian is
    LOCAL/library/debian, for skopeo and regfs alike."""
    layout = tmp_path / "oci"
    images.build_image(layout, "img", {"etc/which": b"local\n"})
    local = Registry(tmp_path / "local")
    try:
        images.push(layout, "img", f"{local.host}/library/debian:1")
        home = home_with(
            tmp_path,
            f'[[registry]]\nprefix = "docker.io"\nlocation = "{local.host}"\ninsecure = true\n',
        )
        names = ("docker.io/debian", "index.docker.io/library/debian", "docker.io/library/debian")
        for name in names:
            subprocess.run(["skopeo", "inspect", "--raw", f"docker://{name}:1"],
                           capture_output=True, check=True,
                           env={**os.environ, "HOME": str(home)})  # fmt: skip
        mount = Mount(tmp_path / "mnt", "--timeout", "5", environment={"HOME": str(home)})
        try:
            for name in names:
                assert (mount / name / "1/rootfs/etc/which").read_bytes() == b"local\n"
        finally:
            mount.close()
    finally:
        local.stop()


def test_a_blocked_prefix_is_eacces_and_the_rest_stays(tmp_path: Path, pushed: Pushed) -> None:
    host = pushed.registry.host
    home = home_with(
        tmp_path,
        f'[[registry]]\nprefix = "{host}/library"\nlocation = "{host}/library"\nblocked = true\n',
    )
    mount = Mount(tmp_path / "mnt", environment={"HOME": str(home)})
    mount.allow_log(rf"{host}/library/debian: blocked in {home}")
    try:
        with pytest.raises(OSError) as caught:
            os.listdir(mount / host / "library/debian")
        assert caught.value.errno == errno.EACCES
        assert os.listdir(mount / host / "nested/a/b/c") == ["1"]
    finally:
        mount.close()


@pytest.fixture(scope="module")
def tls_registry(
    tmp_path_factory: pytest.TempPathFactory, layout: Path
) -> Iterator[tuple[Registry, Authority]]:
    """registry:2 over TLS with a certificate of our CA, requiring client certificates."""
    workdir = tmp_path_factory.mktemp("tls")
    authority = Authority(workdir / "pki")
    server = authority.issue("server", server=True)
    registry = Registry(
        workdir / "registry", tls=ServerTls(server.certificate, server.key, authority.ca_file)
    )
    client = authority.issue("client", server=False)
    certs = workdir / "push-certs"
    certs_d_entry(certs, authority, client.certificate, client.key)
    images.push(layout, "base", f"{registry.host}/secure/app:1", "--dest-cert-dir", str(certs))
    yield registry, authority
    registry.stop()


def certs_d_entry(
    directory: Path, authority: Authority | None, cert: Path | None, key: Path | None
) -> Path:
    """A certs.d directory as containers-certs.d(5) describes it."""
    directory.mkdir(parents=True, exist_ok=True)
    if authority is not None:
        shutil.copy(authority.ca_file, directory / "ca.crt")
    if cert is not None and key is not None:
        shutil.copy(cert, directory / "client.cert")
        shutil.copy(key, directory / "client.key")
    return directory


def test_tls_with_a_ca_and_client_certificate_from_certs_d(
    tmp_path: Path, tls_registry: tuple[Registry, Authority]
) -> None:
    registry, authority = tls_registry
    client = authority.issue("regfs-client", server=False)
    home = home_with(tmp_path)
    certs_d_entry(
        home / ".config/containers/certs.d" / registry.host,
        authority,
        client.certificate,
        client.key,
    )
    mount = Mount(tmp_path / "mnt", environment={"HOME": str(home)})
    try:
        assert os.listdir(mount / registry.host / "secure/app") == ["1"]
        assert (mount / registry.host / "secure/app/1/config").read_bytes().startswith(b"{")
    finally:
        mount.close()


def test_an_insecure_registry_with_an_untrusted_certificate_is_read_over_https(
    tmp_path: Path, layout: Path
) -> None:
    """``insecure = true`` and no certs.d: podman speaks https to it without checking the
    certificate (of a CA nobody trusts), and so does regfs; a plain http registry marked
    insecure beside it still gets plain http."""
    authority = Authority(tmp_path / "pki")
    server = authority.issue("server", server=True)
    tls = Registry(tmp_path / "tls", tls=ServerTls(server.certificate, server.key))
    plain = Registry(tmp_path / "plain")
    try:
        images.push(layout, "base", f"{tls.host}/secure/app:1")
        images.push(layout, "base", f"{plain.host}/plain/app:1")
        home = home_with(tmp_path, "".join(
            f'[[registry]]\nlocation = "{host}"\ninsecure = true\n'
            for host in (tls.host, plain.host)
        ))  # fmt: skip
        mount = Mount(tmp_path / "mnt", "--timeout", "5", environment={"HOME": str(home)})
        try:
            os_release = Path("/etc/os-release").read_bytes()
            assert (mount / tls.host / "secure/app/1/rootfs/etc/os-release").read_bytes() == (
                os_release
            )
            assert (mount / plain.host / "plain/app/1/rootfs/etc/os-release").read_bytes() == (
                os_release
            )
            assert f"{tls.host} (insecure): https, its certificate not verified" in mount.log()
            assert f"{plain.host} (insecure): plain http (https: TLS: " in mount.log()
        finally:
            mount.close()
    finally:
        tls.stop()
        plain.stop()


@pytest.mark.parametrize("missing", ["client certificate", "CA"])
def test_tls_failures_are_eio_naming_host_and_reason(
    tmp_path: Path, tls_registry: tuple[Registry, Authority], missing: str
) -> None:
    registry, authority = tls_registry
    client = authority.issue("other-client", server=False)
    home = home_with(tmp_path)
    entry = home / ".config/containers/certs.d" / registry.host
    if missing == "CA":
        certs_d_entry(entry, None, client.certificate, client.key)
    else:
        certs_d_entry(entry, authority, None, None)
    mount = Mount(tmp_path / "mnt", "--timeout", "5", environment={"HOME": str(home)})
    mount.allow_log(rf"https://{registry.host}/v2/\S+: (TLS: |ReadError|RemoteProtocolError)")
    try:
        with pytest.raises(OSError) as caught:
            os.listdir(mount / registry.host / "secure/app")
        assert caught.value.errno == errno.EIO
        if missing == "CA":
            assert "TLS: unable to get local issuer certificate" in mount.log()
    finally:
        mount.close()


def test_blobs_redirected_to_object_storage_that_ignores_range(
    tmp_path: Path, layered: Layered
) -> None:
    """The registry answers blob GETs with 307 to a CDN that sends whole blobs whatever
    the Range says: first reads, and re-fetches of evicted chunks, still come out right."""
    cdn = CountingProxy(layered.registry.port)
    cdn.ignore_range = True
    registry = CountingProxy(layered.registry.port)
    registry.redirect_blobs_to = cdn.host
    cache = tmp_path / "cache"
    path = f"{registry.host}/layered/oci/1/1/regfs-test/big.bin"
    expected = (layered.oracle_rootfs / "regfs-test/big.bin").read_bytes()
    first = Mount(tmp_path / "first", "--cache-dir", str(cache))
    try:
        assert (first / path).read_bytes() == expected
    finally:
        first.close()
    for chunk in (cache / "chunks").rglob("*"):
        if chunk.is_file():
            chunk.unlink()  # evicted: a new mount re-fetches ranges through the CDN
    cdn.reset()
    second = Mount(tmp_path / "second", "--cache-dir", str(cache))
    try:
        assert (second / path).read_bytes() == expected
        assert sum(cdn.bytes_by_path.values()) > 0 and not cdn.authorization_seen
        assert "s3cr3t" not in first.log() + second.log()
    finally:
        second.close()
        registry.stop()
        cdn.stop()


def test_an_alias_browses_a_registry_below_a_path_prefix(tmp_path: Path, pushed: Pushed) -> None:
    portal = CountingProxy(pushed.registry.port)
    portal.path_prefix = "/some/prefix"
    config = tmp_path / "regfs.toml"
    config.write_text(f'[aliases]\nportal = "http://{portal.host}/some/prefix/"\n')
    mount = Mount(tmp_path / "mnt", "--config", str(config))
    try:
        assert os.listdir(mount.path) == ["portal"]
        assert os.listdir(mount / "portal/library/debian") == ["bookworm"]
        assert (mount / "portal/nested/a/b/c/1/rootfs/etc/os-release").read_bytes() == Path(
            "/etc/os-release"
        ).read_bytes()
        assert all(path.startswith("/v2/") for path in portal.requests_by_path)  # stripped
    finally:
        mount.close()
        portal.stop()


def test_a_broken_configuration_file_stops_the_mount(tmp_path: Path) -> None:
    home = home_with(tmp_path, "[[registry]]\nlocation = 5\n")
    (tmp_path / "mnt").mkdir()
    result = run_regfs("mount", str(tmp_path / "mnt"), environment={"HOME": str(home)})
    assert result.returncode == 1 and "registries.conf" in result.stderr
    result = run_regfs("mount", str(tmp_path / "mnt"), "--config", str(tmp_path / "none.toml"))
    assert result.returncode == 1 and "none.toml: no such file" in result.stderr
    assert not os.path.ismount(tmp_path / "mnt")
