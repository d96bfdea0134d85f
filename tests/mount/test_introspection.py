"""What a mount says about itself: how each layer is read (``user.regfs.access``), how much
is cached (``user.regfs.fetched``), which layer gives a ``rootfs/`` entry
(``user.regfs.layer``), and ``regfs status``."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from regfs.domain.digest import Digest
from tests.mount.conftest import Layered
from tests.support import images
from tests.support.mount import Mount, run_regfs

pytestmark = pytest.mark.mount


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Mount]:
    mounted = Mount(tmp_path / "mnt")
    yield mounted
    mounted.close()


def fetched(path: Path) -> tuple[int, int]:
    text = os.getxattr(path, "user.regfs.fetched").decode()
    match = re.fullmatch(r"(\d+) of (\d+) \((\d+\.\d)%\)", text)
    assert match, text
    return int(match.group(1)), int(match.group(2))


def test_fetched_and_access_follow_what_was_read(mount: Mount, layered: Layered) -> None:
    image = layered.image(mount, "oci")
    manifest = json.loads(images.get_manifest(layered.registry.url, "layered/oci", "1")[0])
    sizes = [layer["size"] for layer in manifest["layers"]]
    assert fetched(image) == (0, sum(sizes))  # a listing fetches nothing
    assert (image / "1/etc/issue").read_bytes()
    assert fetched(image / "1") == (sizes[1], sizes[1])  # read once: all of it cached
    assert fetched(image) == (sizes[1], sum(sizes))
    access = os.getxattr(image / "1", "user.regfs.access").decode()
    assert access == "whole layer (gzip): fetched once, checked, indexed"
    zstd = layered.image(mount, "zstd") / "1"
    before = os.getxattr(zstd, "user.regfs.access").decode()  # asking fetches nothing
    assert before.startswith(
        "not read yet: whole layer (application/vnd.oci.image.layer.v1.tar+zstd"
    )
    os.listdir(zstd)
    assert os.getxattr(zstd, "user.regfs.access").decode().startswith("whole layer (zstd)")
    listed = os.listxattr(image / "1")
    assert {"user.regfs.access", "user.regfs.fetched", "user.regfs.digest"} <= set(listed)


def test_rootfs_entries_name_their_layer_without_listing_it(mount: Mount, layered: Layered) -> None:
    image = layered.image(mount, "oci")
    manifest = json.loads(images.get_manifest(layered.registry.url, "layered/oci", "1")[0])
    digests = [layer["digest"] for layer in manifest["layers"]]
    issue = image / "rootfs/etc/issue"  # replaced by layer 1
    assert os.getxattr(issue, "user.regfs.layer") == f"1 {digests[1]}".encode()
    passwd = image / "rootfs/etc/passwd"
    assert os.getxattr(passwd, "user.regfs.layer") == f"0 {digests[0]}".encode()
    assert os.getxattr(image / "rootfs/etc", "user.regfs.layer").split()[0] in {
        str(n).encode() for n in range(len(digests))
    }
    assert "user.regfs.layer" not in os.listxattr(issue)  # cp -a, tar --xattrs copy no such


def test_status_says_what_the_mount_is_doing(mount: Mount, layered: Layered) -> None:
    (layered.image(mount, "oci") / "rootfs/etc/os-release").read_bytes()
    shown = run_regfs("status", str(mount.path))
    assert shown.returncode == 0, shown.stderr
    assert f"mount       {mount.path}" in shown.stdout
    assert f"  {layered.registry.host}: " in shown.stdout
    assert "kernel      caching" in shown.stdout
    state = json.loads(run_regfs("status", "--json", str(mount.path)).stdout)
    host = state["registries"][layered.registry.host]
    assert host["requests"] > 0 and host["last_error"] is None
    assert state["cache"]["size"] > 0
    assert state["requests_in_flight"] == 0
    reads = state["cache"]["chunk_reads"]
    assert reads["memory"] + reads["disk"] + reads["fetched"] > 0
    assert "user.regfs.status" not in os.listxattr(mount.path)


def test_status_of_what_is_no_mount_fails_plainly(tmp_path: Path) -> None:
    shown = run_regfs("status", str(tmp_path))
    assert shown.returncode == 1
    assert "no regfs mount answers" in shown.stderr


def test_cache_stats_names_the_images_each_layer_was_used_for(
    tmp_path: Path, layered: Layered
) -> None:
    """A layer read through a mount names its image by digest (a mount reaches layers
    through digest dirs); one ``regfs prefetch`` was given by tag names it with the tag.
    layered/oci and layered/v2s2 are the same blobs: their shared layer names both."""
    host, url = layered.registry.host, layered.registry.url
    oci, v2s2 = (images.get_manifest(url, f"layered/{name}", "1")[0] for name in ("oci", "v2s2"))
    oci_image, v2s2_image = str(Digest.of(oci)), str(Digest.of(v2s2))
    layers = [layer["digest"] for layer in json.loads(v2s2)["layers"]]
    assert layers == [layer["digest"] for layer in json.loads(oci)["layers"]]
    cache = tmp_path / "cache"
    mount = Mount(tmp_path / "mnt", "--cache-dir", str(cache))
    try:
        assert (layered.image(mount, "oci") / "1/etc/issue").read_bytes()
    finally:
        mount.close()
    done = run_regfs("prefetch", "-q", "--cache-dir", str(cache), f"{host}/layered/v2s2:1",
                     timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stderr
    stats = json.loads(run_regfs("cache", "stats", "--json", "--cache-dir", str(cache)).stdout)
    by_mount = {"host": host, "repository": "layered/oci", "digest": oci_image, "tags": []}
    by_prefetch = {"host": host, "repository": "layered/v2s2", "digest": v2s2_image,
                   "tags": ["1"]}  # fmt: skip
    found = {layer["digest"]: layer["images"] for layer in stats["layers"]}
    assert found == {
        digest: [by_mount, by_prefetch] if position == 1 else [by_prefetch]
        for position, digest in enumerate(layers)
    }
    shown = run_regfs("cache", "stats", "--cache-dir", str(cache)).stdout
    assert f"      used by {host}/layered/oci@{oci_image}\n" in shown
    assert shown.count(f"      used by {host}/layered/v2s2@{v2s2_image} (tags: 1)\n") == len(layers)


def test_cache_stats_lists_mounts_at_any_path(tmp_path: Path) -> None:
    """Every mount on the cache dir is listed, wherever it is mounted: one at a path of
    non-ASCII letters or with a space was left out (its mount table line was decoded as
    ``unicode_escape``, which garbles UTF-8)."""
    cache = tmp_path / "cache"
    paths = [tmp_path / "plain", tmp_path / "ünï côdé", tmp_path / "tab\there"]
    mounts = [Mount(path, "--cache-dir", str(cache)) for path in paths]
    try:
        shown = run_regfs("cache", "stats", "--json", "--cache-dir", str(cache))
        listed = [each["mountpoint"] for each in json.loads(shown.stdout)["mounts"]]
        assert sorted(listed) == sorted(map(str, paths))
    finally:
        for each in mounts:
            each.close()
