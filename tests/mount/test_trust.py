"""Every attribute is the image's, looking fetches nothing, and the cache dir is not taken
on trust: a crafted three-layer image whose layer roots (``./`` entries) each say
something of their own, read through a counting proxy."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mount.conftest import Pushed
from tests.support import images
from tests.support.crafted import gzipped, member, push_layers, tar_of
from tests.support.mount import Mount, run_regfs
from tests.support.proxy import CountingProxy
from tests.support.trees import differences, extract_layer, root_of, snapshot

pytestmark = pytest.mark.mount

REPOSITORY = "trust/roots"
ROOT_XATTR = {"SCHILY.xattr.user.origin": "base"}


def _layers() -> list[bytes]:
    """Bottom: a root of its own (mode, owner, mtime, an xattr); middle: another root;
    top: no ``./`` entry at all (its root is implicit)."""
    directory = {"type": tarfile.DIRTYPE, "mtime": 1_600_000_000}
    bottom = [
        member("./", None, mode=0o750, uid=1000, gid=1001, pax_headers=ROOT_XATTR, **directory),
        member("./etc/", None, mode=0o755, **directory),
        member("./etc/hello", b"hello\n"),
    ]
    middle = [
        member("./", None, mode=0o711, uid=7, gid=8, type=tarfile.DIRTYPE, mtime=1_650_000_000),
        member("etc/two", b"two\n"),
    ]
    top = [member("three", b"three\n", mode=0o600)]
    return [gzipped(tar_of(layer, tarfile.PAX_FORMAT)) for layer in (bottom, middle, top)]


@pytest.fixture(scope="module")
def crafted(pushed: Pushed) -> list[str]:
    """The image, pushed once; the digests of its layers, bottom first."""
    layers = _layers()
    diff_ids = ["sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest() for layer in layers]
    push_layers(pushed.registry.url, f"{REPOSITORY}:1", layers, diff_ids=diff_ids)
    return ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]


@pytest.fixture
def proxy(pushed: Pushed) -> Iterator[CountingProxy]:
    counting = CountingProxy(pushed.registry.port)
    yield counting
    counting.stop()


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Mount]:
    mounted = Mount(tmp_path / "mnt")
    yield mounted
    mounted.close()


def _oracle(pushed: Pushed, digests: list[str], target: Path) -> list[Path]:
    """Each layer as GNU tar extracts it, and the image as ``umoci unpack`` does."""
    trees = []
    for position, digest in enumerate(digests):
        blob = target / f"{position}.tar.gz"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(images.get_blob(pushed.registry.url, REPOSITORY, digest))
        extract_layer(blob, target / str(position))
        trees.append(target / str(position))
    layout = target / "layout"
    images.run("skopeo", "copy", "--quiet", "--src-tls-verify=false",
               f"docker://{pushed.registry.host}/{REPOSITORY}:1", f"oci:{layout}:1")  # fmt: skip
    images.run("umoci", "unpack", "--image", f"{layout}:1", target / "bundle")
    return [*trees, target / "bundle/rootfs"]


def test_layer_and_rootfs_roots_are_the_images_own(
    mount: Mount, proxy: CountingProxy, crafted: list[str], pushed: Pushed, tmp_path: Path
) -> None:
    """Issue 17.2: before a layer is indexed its root is provisional (and costs nothing);
    once indexed it shows the layer's ``./`` entry as ``tar -x`` applies it, the kernel
    keeping nothing of the provisional answer; ``rootfs/`` shows the highest layer that
    has one, as ``umoci unpack`` does (its xattrs only: those of lower roots go)."""
    image = mount / proxy.host / REPOSITORY / "1"
    provisional = os.stat(image / "0")
    assert stat.S_IMODE(provisional.st_mode) == 0o555
    assert proxy.blob_bytes() == 0
    *layer_oracles, merged_oracle = _oracle(pushed, crafted, tmp_path / "oracle")
    for position, oracle in enumerate(layer_oracles):
        layer_root = image / str(position)
        assert not differences(snapshot(layer_root), snapshot(oracle))
        assert root_of(layer_root, mtime=position < 2) == root_of(oracle, mtime=position < 2)
    assert root_of(image / "0") == ("0o750", 1000, 1001, (("user.origin", b"base"),),
                                    1_600_000_000)  # fmt: skip
    assert root_of(image / "2", mtime=False) == ("0o755", 0, 0, (), None)
    rootfs = image / "rootfs"
    assert not differences(snapshot(rootfs), snapshot(merged_oracle))
    assert root_of(rootfs) == root_of(merged_oracle) == ("0o711", 7, 8, (), 1_650_000_000)
    listed = subprocess.run(["ls", "-ldn", str(rootfs)], capture_output=True, text=True,
                            check=True).stdout  # fmt: skip
    assert listed.startswith("drwx--x--x 1 7 8 "), listed


def test_looking_at_an_untouched_image_fetches_no_layer(
    mount: Mount, proxy: CountingProxy, crafted: list[str]
) -> None:
    """Issue 17.3: ``ls -l`` of the tag and ``getfattr -d`` of every dir of an image read
    nothing of its layers; what they say is the state as it is, and changes once read."""
    tag_dir = mount / proxy.host / REPOSITORY / "1"
    image = tag_dir.resolve()
    subprocess.run(["ls", "-l", str(tag_dir) + "/"], check=True, capture_output=True)
    dirs = [image, image / "rootfs", *(image / str(position) for position in range(3))]
    dumped = {
        path.name: subprocess.run(["getfattr", "-d", "--absolute-names", str(path)],
                                  capture_output=True, text=True, check=True).stdout
        for path in dirs
    }  # fmt: skip
    fetched = {digest: proxy.blob_bytes(digest) for digest in crafted}
    print(f"layer blob bytes fetched by ls -l and getfattr -d of {len(dirs)} dirs: {fetched}")
    assert sum(fetched.values()) == 0
    assert 'user.regfs.access="not read yet: whole layer (application/vnd.oci.image.layer.v1' \
           '.tar+gzip): fetched once, checked, indexed"' in dumped["0"]  # fmt: skip
    assert 'user.regfs.fetched="0 of ' in dumped["0"]
    assert "user.origin" not in dumped["0"]  # the root's own: not known until indexed
    assert (image / "0/etc/hello").read_bytes() == b"hello\n"
    after = subprocess.run(["getfattr", "-d", "--absolute-names", str(image / "0")],
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert 'user.origin="base"' in after
    assert 'user.regfs.access="whole layer (gzip): fetched once, checked, indexed"' in after
    assert "(100.0%)" in after


def test_an_index_file_that_is_not_the_layer_s_is_built_again(
    tmp_path: Path, proxy: CountingProxy, crafted: list[str]
) -> None:
    """Issue 17.5: an index file put in another layer's place in the cache dir (shared,
    copied, damaged) is checked on open, deleted with one line, and built again."""
    cache = tmp_path / "cache"
    first = Mount(tmp_path / "first", "--cache-dir", str(cache))
    image = first / proxy.host / REPOSITORY / "1"
    try:
        assert sorted(os.listdir(image / "0")) == ["etc"]
        assert sorted(os.listdir(image / "2")) == ["three"]
    finally:
        first.close()
    bottom, top = (cache / "indexes" / f"{crafted[p].replace(':', '-')}.sqlite" for p in (0, 2))
    shutil.copyfile(bottom, top)
    second = Mount(tmp_path / "second", "--cache-dir", str(cache))
    second.allow_log(r"\.sqlite: not the index of sha256:\w+ \(it indexes sha256:\w+\): "
                     r"deleted, built again")  # fmt: skip
    try:
        image = second / proxy.host / REPOSITORY / "1"
        assert sorted(os.listdir(image / "2")) == ["three"]
        assert (image / "2/three").read_bytes() == b"three\n"
        assert "not the index of" in second.log()
    finally:
        second.close()


def test_a_cache_dir_others_can_write_is_refused(
    tmp_path: Path, proxy: CountingProxy, crafted: list[str]
) -> None:
    """Issue 17.5: as ssh refuses a key file others can write; a new cache dir and its
    files are the user's alone."""
    (tmp_path / "mnt").mkdir()
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    refused = run_regfs("mount", str(tmp_path / "mnt"), "--cache-dir", str(shared))
    assert refused.returncode == 1
    assert f"cache dir {shared} is writable by group and others" in refused.stderr
    assert not os.path.ismount(tmp_path / "mnt")
    private = tmp_path / "private"
    mounted = Mount(tmp_path / "mnt", "--cache-dir", str(private))
    try:
        assert (mounted / proxy.host / REPOSITORY / "1/0/etc/hello").read_bytes() == b"hello\n"
    finally:
        mounted.close()
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    for path in private.rglob("*"):
        allowed = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.stat().st_mode) & ~allowed == 0, path
    agreed = Mount(tmp_path / "agreed", "--cache-dir", str(shared), "--allow-shared-cache")
    agreed.close()


def test_a_cache_dir_that_cannot_be_written_is_refused_at_mount(tmp_path: Path) -> None:
    """A read-only cache dir: said at once, before the mount is live (it once came up and
    answered every lookup with EIO and a traceback; found by a review); ``regfs cache
    stats``, which only reads, still shows it."""
    (tmp_path / "mnt").mkdir()
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], check=True)
    try:
        (disk / "cache").mkdir(mode=0o700)
        assert run_regfs("cache", "stats", "--cache-dir", str(disk / "cache")).returncode == 0
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        refused = run_regfs("mount", str(tmp_path / "mnt"), "--cache-dir", str(disk / "cache"))
        stats = run_regfs("cache", "stats", "--cache-dir", str(disk / "cache"))
    finally:
        subprocess.run(["umount", str(disk)], check=True)
    assert stats.returncode == 0, stats.stderr  # reading it needs no writing
    assert refused.returncode == 1
    assert f"cache dir {disk / 'cache'} cannot be written: Read-only file system" in (
        refused.stderr
    )
    assert not os.path.ismount(tmp_path / "mnt")
