"""Layers with a TOC, made by real tools (eStargz by ctr-remote, zstd:chunked by skopeo): a
file costs its own chunks, every byte checked, and a TOC that cannot be trusted falls back
to reading the whole layer."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.mount.conftest import Layered, Pushed
from tests.support import images
from tests.support.estargz import push_estargz
from tests.support.mount import Mount
from tests.support.net import wait_until
from tests.support.proxy import CountingProxy
from tests.support.registry import Registry
from tests.support.trees import differences, snapshot

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
    request: pytest.FixtureRequest, source: Path, pushed: Pushed, proxy: CountingProxy
) -> TocImage:
    toc_format = request.param
    repository = "lazy/" + toc_format.replace(":", "-")
    destination = f"{pushed.registry.host}/{repository}:1"
    if toc_format == "estargz":
        push_estargz(source / "oci", "source", destination, source,
                     "--estargz-chunk-size", str(CHUNK))  # fmt: skip
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
    assert f"indexed from its {toc_image.toc_format} TOC" in mount.log()


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
    mount.allow_log(r"TOC not used \(TOC hashes to sha256:\w+, the manifest says")
    rootfs = toc_image.image(mount, "wrong-toc") / "rootfs"
    assert (rootfs / "etc/os-release").read_bytes() == FILES["etc/os-release"]
    path = f"/v2/{toc_image.repository}/blobs/{toc_image.layer_digest}"
    assert toc_image.proxy.whole_blob_gets[path] == 1


def test_what_the_builder_marked_is_prefetched(
    tmp_path: Path, source: Path, pushed: Pushed, proxy: CountingProxy
) -> None:
    """An eStargz image converted with a record of what its program reads first: those
    files come before ``.prefetch.landmark`` and are fetched in the background as soon as
    the image is first touched; reading them then costs nothing more."""
    record = tmp_path / "record.json"
    record.write_text(json.dumps({"path": "usr/share/doc/readme.txt"}) + "\n")
    destination = f"{pushed.registry.host}/lazy/prefetch:1"
    push_estargz(source / "oci", "source", destination, tmp_path / "convert",
                 "--estargz-record-in", str(record))  # fmt: skip
    mount = Mount(tmp_path / "mnt")
    try:
        rootfs = mount / proxy.host / "lazy/prefetch/1/rootfs"
        assert "usr" in os.listdir(rootfs)
        wait_until(lambda: "prefetched the first" in mount.log(), 20, "the prefetch")
        proxy.reset()
        readme = "usr/share/doc/readme.txt"
        assert (rootfs / readme).read_bytes() == FILES[readme]
        assert proxy.blob_bytes() == 0
    finally:
        mount.close()


def test_the_layered_image_as_estargz_equals_umoci_unpack(tmp_path: Path, layered: Layered) -> None:
    """The Debian image of the layer tests (whiteouts, opaque dirs, hard links, devices,
    xattrs, every kind of symlink) converted by ctr-remote: `rootfs/` read through the
    TOCs equals `umoci unpack` of the original, and no layer was downloaded whole.
    (skopeo 1.9.3 hangs converting this image to zstd:chunked: that format is tested on
    the small image above.)"""
    registry = Registry(tmp_path / "registry")
    destination = f"{registry.host}/layered/estargz:1"
    push_estargz(layered.layout, "1", destination, tmp_path / "convert",
                 "--estargz-compression-level", "1")  # fmt: skip
    proxy = CountingProxy(registry.port)
    mount = Mount(tmp_path / "mnt")
    try:
        rootfs = mount / proxy.host / "layered/estargz/1/rootfs"
        found = differences(snapshot(rootfs), snapshot(layered.oracle_rootfs))
        assert not found, "\n".join(found[:40])
        assert mount.log().count("indexed from its estargz TOC") == 4
        assert not proxy.whole_blob_gets
    finally:
        mount.close()
        proxy.stop()
        registry.stop()
