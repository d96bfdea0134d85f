"""Layers with a TOC, made by real tools (eStargz by ctr-remote, zstd:chunked by skopeo): a
file costs its own chunks, every byte checked, and a TOC that cannot be trusted falls back
to reading the whole layer."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import stat
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from regfs.layers.formats.toc import FOOTER_SIZE, toc_offset
from tests.mount.conftest import Layered, Pushed
from tests.support import images
from tests.support.crafted import upload_blob
from tests.support.estargz import EstargzConverter
from tests.support.estargz_writer import TOC_NAME, footer, toc_blob
from tests.support.mount import Mount, run_regfs, written
from tests.support.net import wait_until
from tests.support.proxy import CountingProxy
from tests.support.registry import Registry
from tests.support.trees import differences, extract_layer, root_of, snapshot

pytestmark = pytest.mark.mount

TOC_ANNOTATION = {
    "estargz": "containerd.io/snapshot/stargz/toc.digest",
    "zstd:chunked": "io.containers.zstd-chunked.manifest-checksum",  # skopeo 1.9's name
}
CHUNK = 1 << 20
FILES = {
    "big.bin": os.urandom(6 * CHUNK + 12345),
    "etc/os-release": Path("/etc/os-release").read_bytes(),
    "usr/share/doc/readme.txt": b"read me\n" * 1000,
    "empty": b"",
}


@dataclass(frozen=True)
class TocImage:
    """One image with a TOC, at ``lazy/<format>:1`` (``estargz``, ``zstd-chunked``)."""

    proxy: CountingProxy
    repository: str
    toc_format: str
    manifest: dict[str, object]
    content_type: str
    layer_digest: str
    layer_size: int

    def image(self, mount: Mount, tag: str = "1") -> Path:
        return mount / self.proxy.host / self.repository / tag


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("toc-layers")
    images.build_image(work / "oci", "source", FILES)
    return work


@pytest.fixture(scope="module")
def proxy(pushed: Pushed) -> Iterator[CountingProxy]:
    counting = CountingProxy(pushed.registry.port)
    yield counting
    counting.stop()


@pytest.fixture(scope="module", params=["estargz", "zstd:chunked"])
def toc_image(
    request: pytest.FixtureRequest,
    source: Path,
    pushed: Pushed,
    proxy: CountingProxy,
    estargz: EstargzConverter,
) -> TocImage:
    toc_format = request.param
    repository = "lazy/" + toc_format.replace(":", "-")
    destination = f"{pushed.registry.host}/{repository}:1"
    if toc_format == "estargz":
        estargz.push(source / "oci", "source", destination, "--estargz-chunk-size", str(CHUNK))
    else:
        images.push(source / "oci", "source", destination,
                    "--dest-compress-format", "zstd:chunked")  # fmt: skip
    body, content_type, _ = images.get_manifest(pushed.registry.url, repository, "1")
    manifest = json.loads(body)
    (layer,) = manifest["layers"]
    assert TOC_ANNOTATION[toc_format] in layer["annotations"]
    return TocImage(proxy, repository, toc_format, manifest, content_type, layer["digest"],
                   layer["size"])  # fmt: skip


@pytest.fixture
def mount(tmp_path: Path, toc_image: TocImage) -> Iterator[Mount]:
    toc_image.proxy.reset()
    mounted = Mount(tmp_path / "mnt")
    yield mounted
    mounted.close()


def test_a_small_file_costs_its_chunks_not_the_layer(mount: Mount, toc_image: TocImage) -> None:
    rootfs = toc_image.image(mount) / "rootfs"
    assert (rootfs / "etc/os-release").read_bytes() == FILES["etc/os-release"]
    fetched = toc_image.proxy.blob_bytes(toc_image.layer_digest)
    assert fetched < toc_image.layer_size / 10, (fetched, toc_image.layer_size)
    assert toc_image.proxy.whole_blob_gets[
        f"/v2/{toc_image.repository}/blobs/{toc_image.layer_digest}"
    ] == 0  # fmt: skip
    written(mount, f"indexed from its {toc_image.toc_format} TOC")


def test_every_file_and_name_is_the_image_s(mount: Mount, toc_image: TocImage) -> None:
    """What ctr-remote added for itself (the TOC, the landmark) is not shown."""
    image = toc_image.image(mount)
    for top in (image / "rootfs", image / "0"):
        assert sorted(os.listdir(top)) == ["big.bin", "empty", "etc", "usr"]
        for name, data in FILES.items():
            assert (top / name).read_bytes() == data, name
    assert (image / "rootfs/big.bin").stat().st_size == len(FILES["big.bin"])
    fetched = toc_image.proxy.blob_bytes(toc_image.layer_digest)
    assert fetched <= toc_image.layer_size * 1.1


def test_a_chunk_damaged_on_the_way_is_fetched_again(mount: Mount, toc_image: TocImage) -> None:
    rootfs = toc_image.image(mount) / "rootfs"
    os.listdir(rootfs)  # the TOC, read before the fault
    toc_image.proxy.faults = [("/blobs/", "corrupt")]
    with open(rootfs / "big.bin", "rb") as file:
        file.seek(3 * CHUNK)
        assert file.read(CHUNK) == FILES["big.bin"][3 * CHUNK : 4 * CHUNK]
    assert not toc_image.proxy.faults  # the fault was met
    assert "fetching it once more" in mount.log()


def test_a_toc_that_does_not_match_its_digest_is_not_used(
    mount: Mount, toc_image: TocImage, pushed: Pushed
) -> None:
    """A manifest whose TOC digest is wrong: the TOC is not trusted, the layer is read
    whole and checked against the layer's digest instead."""
    manifest = json.loads(json.dumps(toc_image.manifest))
    annotation = TOC_ANNOTATION[toc_image.toc_format]
    manifest["layers"][0]["annotations"][annotation] = "sha256:" + "0" * 64
    images.registry_request(
        f"{pushed.registry.url}/v2/{toc_image.repository}/manifests/wrong-toc", method="PUT",
        data=json.dumps(manifest).encode(), headers={"Content-Type": toc_image.content_type},
    )  # fmt: skip
    mount.allow_log(r"TOC not used \(TOC: \d+ bytes hashing to sha256:\w+, not sha256:")
    rootfs = toc_image.image(mount, "wrong-toc") / "rootfs"
    assert (rootfs / "etc/os-release").read_bytes() == FILES["etc/os-release"]
    path = f"/v2/{toc_image.repository}/blobs/{toc_image.layer_digest}"
    assert toc_image.proxy.whole_blob_gets[path] == 1


def test_what_the_builder_marked_is_prefetched(
    tmp_path: Path,
    source: Path,
    pushed: Pushed,
    proxy: CountingProxy,
    estargz: EstargzConverter,
) -> None:
    """An eStargz image converted with a record of what its program reads first: those
    files come before ``.prefetch.landmark`` and are fetched in the background as soon as
    the image is first touched, with the stream of the blob's start begun while its TOC
    is fetched (three requests of the blob: footer, TOC, stream); reading them then costs
    nothing more."""
    record = tmp_path / "record.json"
    record.write_text(json.dumps({"path": "usr/share/doc/readme.txt"}) + "\n")
    destination = f"{pushed.registry.host}/lazy/prefetch:1"
    estargz.push(source / "oci", "source", destination, "--estargz-record-in", str(record))
    proxy.reset()
    mount = Mount(tmp_path / "mnt", "--debug")
    try:
        rootfs = mount / proxy.host / "lazy/prefetch/1/rootfs"
        assert "usr" in os.listdir(rootfs)
        wait_until(lambda: "prefetched the first" in mount.log(), 20, "the prefetch")
        blobs = {path: n for path, n in proxy.requests_by_path.items()
                 if path.startswith("/v2/lazy/prefetch/blobs/")}  # fmt: skip
        assert sorted(blobs.values()) == [3], blobs  # the layer's; its config is not read
        streamed = re.search(r"(\d+) bytes of its start streamed", mount.log())
        assert streamed is not None and int(streamed[1]) > 0
        proxy.reset()
        readme = "usr/share/doc/readme.txt"
        assert (rootfs / readme).read_bytes() == FILES[readme]
        assert proxy.blob_bytes() == 0
    finally:
        mount.close()


def test_the_layered_image_as_estargz_equals_umoci_unpack(
    tmp_path: Path, layered: Layered, layered_estargz: Callable[[str], None]
) -> None:
    """The Debian image of the layer tests (whiteouts, opaque dirs, hard links, devices,
    xattrs, every kind of symlink) converted by ctr-remote (begun in the background when
    the image was built): `rootfs/` read through the TOCs equals `umoci unpack` of the
    original, and no layer was downloaded whole.
    (skopeo 1.9.3 hangs converting this image to zstd:chunked: that format is tested on
    the small image above.)"""
    registry = Registry(tmp_path / "registry")
    destination = f"{registry.host}/layered/estargz:1"
    layered_estargz(destination)
    proxy = CountingProxy(registry.port)
    mount = Mount(tmp_path / "mnt")
    try:
        rootfs = mount / proxy.host / "layered/estargz/1/rootfs"
        found = differences(snapshot(rootfs), snapshot(layered.oracle_rootfs))
        assert not found, "\n".join(found[:40])
        written(mount, "indexed from its estargz TOC", times=4)
        assert not proxy.whole_blob_gets
    finally:
        mount.close()
        proxy.stop()
        registry.stop()


def _without_toc(toc_image: TocImage, pushed: Pushed, tag: str) -> None:
    """The same image with no annotation on its layer, as ``HOST/REPOSITORY:tag``: its
    layer is the same blob, read whole."""
    manifest = json.loads(json.dumps(toc_image.manifest))
    del manifest["layers"][0]["annotations"]
    images.registry_request(
        f"{pushed.registry.url}/v2/{toc_image.repository}/manifests/{tag}", method="PUT",
        data=json.dumps(manifest).encode(), headers={"Content-Type": toc_image.content_type},
    )  # fmt: skip


def _tar_oracle(toc_image: TocImage, pushed: Pushed, target: Path) -> Path:
    """GNU tar's extraction of the layer blob: what its digest vouches for."""
    blob = target.with_suffix(".blob")
    blob.write_bytes(images.get_blob(pushed.registry.url, toc_image.repository,
                                     toc_image.layer_digest))  # fmt: skip
    extract_layer(blob, target)
    return target


def test_a_layer_read_through_its_toc_and_whole_in_one_mount(
    mount: Mount, toc_image: TocImage, pushed: Pushed, tmp_path: Path
) -> None:
    """Issue 17.1: one layer, named with its TOC by one image and without it by another,
    is indexed twice in one mount (each numbering entries its own way). Each image shows
    the tree its own index says, in its layer dir and its rootfs, whatever was listed
    through the other first: the TOC's, and GNU tar's (the TOC's own files included)."""
    _without_toc(toc_image, pushed, "whole")
    tar_view = _tar_oracle(toc_image, pushed, tmp_path / "tar")
    toc_view = tmp_path / "toc"
    shutil.copytree(tar_view, toc_view, symlinks=True)
    for hidden in ("stargz.index.json", ".prefetch.landmark", ".no.prefetch.landmark"):
        (toc_view / hidden).unlink(missing_ok=True)
    lazy, whole = toc_image.image(mount), toc_image.image(mount, "whole")
    for image, oracle in ((lazy, toc_view), (whole, tar_view), (lazy, toc_view)):
        for top in (image / "0", image / "rootfs"):
            found = differences(snapshot(top), snapshot(oracle))
            assert not found, f"{top}:\n" + "\n".join(found)
            assert root_of(top, mtime=False) == root_of(oracle, mtime=False)
    written(mount, f"indexed from its {toc_image.toc_format} TOC")
    path = f"/v2/{toc_image.repository}/blobs/{toc_image.layer_digest}"
    assert toc_image.proxy.whole_blob_gets[path] == 1  # for the image without a TOC


def _lying_toc(toc_image: TocImage, pushed: Pushed, tag: str, path: str, mode: int) -> str:
    """The eStargz image with a TOC that gives ``path`` another mode (a new blob: the same
    tar stream up to the TOC, then the edited TOC and its footer), as ``tag``; the new
    layer's digest."""
    blob = images.get_blob(pushed.registry.url, toc_image.repository, toc_image.layer_digest)
    start, footer_size = toc_offset(blob[-FOOTER_SIZE:], len(blob))
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob[start : len(blob) - footer_size]))) \
            as archive:  # fmt: skip
        toc = json.load(archive.extractfile(TOC_NAME))  # type: ignore[arg-type]
    (entry,) = [entry for entry in toc["entries"] if entry["name"] == path]
    entry["mode"] = mode
    edited = json.dumps(toc).encode()
    lying = blob[:start] + toc_blob(edited) + footer(start)
    manifest = json.loads(json.dumps(toc_image.manifest))
    layer = manifest["layers"][0]
    layer |= upload_blob(pushed.registry.url, toc_image.repository, lying)
    layer["annotations"] = {
        TOC_ANNOTATION["estargz"]: f"sha256:{hashlib.sha256(edited).hexdigest()}"
    }
    images.registry_request(
        f"{pushed.registry.url}/v2/{toc_image.repository}/manifests/{tag}", method="PUT",
        data=json.dumps(manifest).encode(), headers={"Content-Type": toc_image.content_type},
    )  # fmt: skip
    return str(layer["digest"])


def test_a_toc_that_lies_about_a_mode_loses_to_the_tar(
    tmp_path: Path, toc_image: TocImage, pushed: Pushed
) -> None:
    """Issue 17.6: an eStargz TOC that says a file is setuid when its tar does not. Read
    lazily, the TOC is all regfs has; once ``regfs prefetch`` has the whole blob it
    compares the two, says so and fails (as ``regfs cache verify`` does then), and from
    then on every mount on that cache shows the tar, the truth the layer digest vouches
    for."""
    if toc_image.toc_format != "estargz":
        pytest.skip("the lying TOC is crafted in eStargz")
    layer_digest = _lying_toc(toc_image, pushed, "lying", "etc/os-release", 0o4755)
    reference = f"{toc_image.proxy.host}/{toc_image.repository}:lying"
    cache = tmp_path / "cache"
    lazy = Mount(tmp_path / "lazy", "--cache-dir", str(cache))
    try:
        shown = lazy / toc_image.proxy.host / toc_image.repository / "lying/rootfs/etc/os-release"
        assert stat.S_IMODE(shown.stat().st_mode) == 0o4755  # lazily, only the TOC is known
    finally:
        lazy.close()
    prefetched = run_regfs("prefetch", "--quiet", "--cache-dir", str(cache), reference)
    assert prefetched.returncode == 1, prefetched.stderr
    assert "its TOC disagrees with its tar, which is shown: /etc/os-release: mode: " \
           "TOC 4755, tar 0644" in prefetched.stderr  # fmt: skip
    verified = run_regfs("cache", "verify", "--cache-dir", str(cache))
    assert verified.returncode == 1
    assert f"{layer_digest}: its TOC disagrees with its tar, which is shown: " \
           "/etc/os-release: mode: TOC 4755, tar 0644" in verified.stdout  # fmt: skip
    after = Mount(tmp_path / "after", "--cache-dir", str(cache))
    try:
        image = after / toc_image.proxy.host / toc_image.repository / "lying"
        assert stat.S_IMODE((image / "rootfs/etc/os-release").stat().st_mode) == 0o644
        assert (image / "rootfs/etc/os-release").read_bytes() == FILES["etc/os-release"]
        access = os.getxattr(image / "0", "user.regfs.access").decode()
        assert access.startswith("whole layer (gzip): fetched once, checked, indexed; its TOC "
                                 "disagrees with its tar, which is shown: /etc/os-release: "
                                 "mode: TOC 4755, tar 0644"), access  # fmt: skip
    finally:
        after.close()
