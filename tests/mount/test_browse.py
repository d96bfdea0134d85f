"""Browsing the real registry through the mount: what ``ls``, ``cat`` and ``getfattr`` show."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.mount.conftest import BULK_REPOSITORIES, MANY_TAGS, Pushed
from tests.support import images
from tests.support.mount import Mount
from tests.support.proxy import CountingProxy
from tests.support.registry import Registry

pytestmark = pytest.mark.mount


def first_components(repositories: tuple[str, ...], prefix: str = "") -> set[str]:
    start = f"{prefix}/" if prefix else ""
    return {r[len(start) :].split("/")[0] for r in repositories if r.startswith(start)}


def test_host_lists_every_catalog_page(mnt: Mount, pushed: Pushed) -> None:
    # maxentries is 2, so the 100+ repositories arrive over more than 50 pages
    assert len(pushed.repositories) > 100
    assert set(os.listdir(mnt / pushed.registry.host)) == first_components(pushed.repositories)
    bulk = mnt / pushed.registry.host / "bulk"
    assert sorted(os.listdir(bulk)) == [name.split("/")[1] for name in BULK_REPOSITORIES]


def test_root_lists_hosts_already_visited(mnt: Mount, pushed: Pushed) -> None:
    os.listdir(mnt / pushed.registry.host)
    assert pushed.registry.host in os.listdir(mnt.path)


def test_repository_names_of_any_depth(mnt: Mount, pushed: Pushed) -> None:
    host = mnt / pushed.registry.host
    assert os.listdir(host / "nested") == ["a"]
    assert os.listdir(host / "nested/a") == ["b"]
    assert os.listdir(host / "nested/a/b") == ["c"]
    assert os.listdir(host / "nested/a/b/c") == ["1"]


def test_a_repository_pushed_after_the_host_was_listed_shows_at_once(
    tmp_path: Path, layout: Path
) -> None:
    """Push, then inspect, as CI does: with the default --metadata-ttl, a repository pushed
    under a new prefix, or below a listed prefix or repository, is found by name at once
    and listed from then on (its registry of its own: the session's catalog stays as is)."""
    registry = Registry(tmp_path / "registry")
    mount = None
    try:
        for repository in ("app", "nested/a"):
            images.push(layout, "base", f"{registry.host}/{repository}:1")
        mount = Mount(tmp_path / "mnt")
        host = mount / registry.host
        assert sorted(os.listdir(host)) == ["app", "nested"]
        assert sorted(os.listdir(host / "nested")) == ["a"]
        assert sorted(os.listdir(host / "app")) == ["1"]
        for repository in ("fresh/repo", "nested/b/c", "app/x/y"):
            images.push(layout, "base", f"{registry.host}/{repository}:1")
        assert os.readlink(host / "fresh/repo/1").startswith("sha256-")
        assert os.listdir(host / "nested/b/c") == ["1"]
        assert os.listdir(host / "app/x/y") == ["1"]
        assert sorted(os.listdir(host)) == ["app", "fresh", "nested"]
        assert sorted(os.listdir(host / "nested")) == ["a", "b"]
        assert sorted(os.listdir(host / "app")) == ["1", "x"]
    finally:
        if mount is not None:
            mount.close()
        registry.stop()


def test_tags_are_symlinks_to_their_digest_dirs(mnt: Mount, pushed: Pushed) -> None:
    repository = mnt / pushed.registry.host / "many/tags"
    assert sorted(os.listdir(repository)) == MANY_TAGS
    _, _, digest = images.get_manifest(pushed.registry.url, "many/tags", "t000")
    expected = digest.replace(":", "-")
    for tag in ("t000", "t057", "t119"):
        assert (repository / tag).is_symlink()
        assert os.readlink(repository / tag) == expected
    assert (repository / "t119" / "manifest").is_file()


@pytest.mark.parametrize(
    "repository",
    ["library/debian", "formats/v2s2", "formats/schema1", "multi/app", "nested/a/b/c"],
)
def test_manifest_is_the_exact_bytes_the_registry_serves(
    mnt: Mount, pushed: Pushed, repository: str
) -> None:
    tag = os.listdir(mnt / pushed.registry.host / repository)[0]
    served, _, digest = images.get_manifest(pushed.registry.url, repository, tag)
    by_tag = mnt / pushed.registry.host / repository / tag / "manifest"
    by_digest = mnt / pushed.registry.host / repository / digest.replace(":", "-") / "manifest"
    assert by_tag.read_bytes() == by_digest.read_bytes()
    assert by_tag.stat().st_size == len(by_tag.read_bytes())
    if repository == "formats/schema1":
        # registry:2 signs schema1 anew on every GET; the digest covers the payload only
        assert images.schema1_payload(by_tag.read_bytes()) == images.schema1_payload(served)
        assert "sha256:" + hashlib.sha256(images.schema1_payload(served)).hexdigest() == digest
    else:
        assert by_tag.read_bytes() == served


@pytest.mark.parametrize("repository", ["library/debian", "formats/v2s2", "nested/a/b/c"])
def test_config_is_the_verified_config_blob(mnt: Mount, pushed: Pushed, repository: str) -> None:
    tag = os.listdir(mnt / pushed.registry.host / repository)[0]
    manifest = json.loads(images.get_manifest(pushed.registry.url, repository, tag)[0])
    blob = images.get_blob(pushed.registry.url, repository, manifest["config"]["digest"])
    config = mnt / pushed.registry.host / repository / tag / "config"
    assert config.read_bytes() == blob
    assert config.stat().st_size == len(blob)


def test_schema1_config_is_the_newest_v1_compatibility(mnt: Mount, pushed: Pushed) -> None:
    served, content_type, _ = images.get_manifest(pushed.registry.url, "formats/schema1", "latest")
    assert content_type == "application/vnd.docker.distribution.manifest.v1+prettyjws"
    expected = json.loads(served)["history"][0]["v1Compatibility"].encode()
    config = mnt / pushed.registry.host / "formats/schema1/latest/config"
    assert config.read_bytes() == expected
    assert json.loads(config.read_bytes())["architecture"] == "amd64"


def test_index_shows_host_platform_and_one_link_per_platform(mnt: Mount, pushed: Pushed) -> None:
    url = pushed.registry.url
    index = json.loads(images.get_manifest(url, "multi/app", "latest")[0])
    children = {m["platform"]["architecture"]: m["digest"] for m in index["manifests"]}
    latest = mnt / pushed.registry.host / "multi/app/latest"
    amd64_layer = json.loads(images.get_manifest(url, "multi/app", children["amd64"])[0])["layers"][
        0
    ]
    assert sorted(os.listdir(latest)) == sorted(
        ["0", "bottom", "config", "linux-amd64", "linux-arm64-v8", "manifest", "rootfs", "top",
         amd64_layer["digest"].replace(":", "-")]
    )  # fmt: skip
    assert os.readlink(latest / "linux-arm64-v8") == "../" + children["arm64"].replace(":", "-")
    assert (latest / "linux-arm64-v8" / "manifest").read_bytes() == images.get_manifest(
        url, "multi/app", children["arm64"]
    )[0]
    amd64 = json.loads(images.get_manifest(url, "multi/app", children["amd64"])[0])
    assert (latest / "config").read_bytes() == images.get_blob(
        url, "multi/app", amd64["config"]["digest"]
    )
    assert os.getxattr(latest, "user.regfs.platform") == b"linux/amd64"


def test_platform_option_chooses_the_index_entry(workdir: Path, pushed: Pushed) -> None:
    mount = Mount(workdir / "mnt-arm64", "--platform", "linux/arm64")
    try:
        config = (mount / pushed.registry.host / "multi/app/latest/config").read_bytes()
        assert json.loads(config)["architecture"] == "arm64"
    finally:
        mount.close()


def test_xattrs_name_digest_media_type_and_platform(mnt: Mount, pushed: Pushed) -> None:
    _, content_type, digest = images.get_manifest(pushed.registry.url, "formats/v2s2", "latest")
    image = mnt / pushed.registry.host / "formats/v2s2/latest"
    assert os.getxattr(image, "user.regfs.digest") == digest.encode()
    assert os.getxattr(image, "user.regfs.media_type") == content_type.encode()
    assert os.getxattr(image, "user.regfs.platform") == b"linux/amd64"


def test_digest_dirs_are_reachable_without_a_tag(mnt: Mount, pushed: Pushed) -> None:
    arm = json.loads(images.get_manifest(pushed.registry.url, "multi/app", "latest")[0])
    digest = next(m["digest"] for m in arm["manifests"] if m["platform"]["architecture"] == "arm64")
    image = mnt / pushed.registry.host / "multi/app" / digest.replace(":", "-")
    assert {"config", "manifest", "0", "rootfs"} <= set(os.listdir(image))
    assert (image / "rootfs/etc/arch").read_text() == "arm64\n"


def test_ls_l_of_many_tags_resolves_them_a_few_at_a_time(pushed: Pushed, tmp_path: Path) -> None:
    """``ls -l`` reads 120 tag links one after the other; with a registry 50 ms away,
    resolving them one by one would take 6 s, so each readlink resolves the next tags too."""
    proxy = CountingProxy(pushed.registry.port)
    proxy.head_delay = 0.05
    mount = Mount(tmp_path / "mnt")
    try:
        repository = mount / proxy.host / "many/tags"
        assert sorted(os.listdir(repository)) == MANY_TAGS
        start = time.monotonic()
        listing = subprocess.run(["ls", "-l", repository], capture_output=True, text=True,
                                 check=True).stdout  # fmt: skip
        took = time.monotonic() - start
        _, _, digest = images.get_manifest(pushed.registry.url, "many/tags", MANY_TAGS[0])
        assert listing.count(f"-> {digest.replace(':', '-')}") == len(MANY_TAGS)
        assert proxy.requests_by_path["/v2/many/tags/manifests/t119"] == 1
        assert took < 4.5, took  # one by one: at least 120 times 50 ms
    finally:
        mount.close()
        proxy.stop()
