"""SOCI indexes: made by ``regfs index push`` from an unmodified gzip image, found through
the referrers fallback tag (registry:2 has no referrers API) when ``--soci-v1-referrers``
allows it, or through a SOCI v2 annotation always, and read span by span; a zTOC that
cannot be used means the whole layer, checked. Without the option a v1 index is not even
looked for."""

from __future__ import annotations

import json
import os
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from regfs.domain.artifacts import referrers_tag
from regfs.domain.digest import Digest
from regfs.domain.manifest import Descriptor
from regfs.domain.soci import (
    SOCI_INDEX_V1,
    SOCI_INDEX_V2,
    soci_index_manifest,
)
from tests.mount.conftest import Layered, Pushed
from tests.mount.test_credentials import auth_json
from tests.support import images, soci
from tests.support.crafted import upload_blob
from tests.support.mount import Mount, run_regfs, written
from tests.support.proxy import CountingProxy
from tests.support.registry import Registry
from tests.support.token_server import PUSHER, TokenServer

pytestmark = pytest.mark.mount

SPAN = 1 << 20
FILES = {
    "big.bin": os.urandom(12 * SPAN + 4321),
    "etc/os-release": Path("/etc/os-release").read_bytes(),
    "usr/share/doc/words.txt": b"".join(b"word %d\n" % n for n in range(300_000)),
    "empty": b"",
}
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


@dataclass(frozen=True)
class SociImage:
    proxy: CountingProxy
    url: str
    """The registry's own URL (not through the proxy)."""
    repository: str
    manifest: bytes
    layer: dict[str, object]
    ztoc: str
    """The digest of the layer's zTOC in the v1 index ``regfs index push`` made."""

    def v1_requests(self) -> list[str]:
        """Requests (through the proxy) that fetch the SOCI v1 index. (A mount asks for an
        image's referrers with or without the option: its start record.)"""
        index, _ = soci.v1_index(self.url, self.repository, self.manifest)
        return [path for path in self.proxy.requests_by_path if index in path]

    def image(self, mount: Mount, tag: str = "1") -> Path:
        return mount / self.proxy.host / self.repository / tag

    @property
    def blob_path(self) -> str:
        return f"/v2/{self.repository}/blobs/{self.layer['digest']}"


@pytest.fixture(scope="module")
def soci_image(tmp_path_factory: pytest.TempPathFactory, pushed: Pushed) -> Iterator[SociImage]:
    work = tmp_path_factory.mktemp("soci")
    images.build_image(work / "oci", "1", FILES)
    repository = "lazy/soci"
    images.push(work / "oci", "1", f"{pushed.registry.host}/{repository}:1")
    result = run_regfs("index", "push", "--span-size", "1M", "--min-layer-size", "0",
                       f"{pushed.registry.host}/{repository}:1", timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "SOCI v1 index sha256:" in result.stdout and "zTOC sha256:" in result.stdout
    assert "--soci-v1-referrers" in result.stdout
    assert result.stderr == ""
    manifest, _, _ = images.get_manifest(pushed.registry.url, repository, "1")
    (layer,) = json.loads(manifest)["layers"]
    _, index = soci.v1_index(pushed.registry.url, repository, manifest)
    ztoc = index["layers"][0]["digest"]
    proxy = CountingProxy(pushed.registry.port)
    yield SociImage(proxy, pushed.registry.url, repository, manifest, layer, ztoc)
    proxy.stop()


def _mount(tmp_path: Path, soci_image: SociImage, *options: str) -> Iterator[Mount]:
    soci_image.proxy.reset()
    soci_image.proxy.faults.clear()
    mounted = Mount(tmp_path / "mnt", *options)
    yield mounted
    mounted.close()


@pytest.fixture
def mount(tmp_path: Path, soci_image: SociImage) -> Iterator[Mount]:
    """A mount that may use SOCI v1 referrers, as ``regfs index push`` makes them."""
    yield from _mount(tmp_path, soci_image, "--soci-v1-referrers")


@pytest.fixture
def default_mount(tmp_path: Path, soci_image: SociImage) -> Iterator[Mount]:
    """A mount as started with no SOCI option: v2 indexes only."""
    yield from _mount(tmp_path, soci_image)


def test_the_index_is_a_referrer_of_the_image(soci_image: SociImage) -> None:
    digest = Digest.of(soci_image.manifest)
    body, _, _ = images.get_manifest(soci_image.url, soci_image.repository, referrers_tag(digest))
    (referrer,) = json.loads(body)["manifests"]
    assert referrer["artifactType"] == SOCI_INDEX_V1
    index, _, _ = images.get_manifest(soci_image.url, soci_image.repository, referrer["digest"])
    document = json.loads(index)
    assert document["subject"]["digest"] == str(digest)
    assert document["config"]["mediaType"] == SOCI_INDEX_V1
    (ztoc,) = document["layers"]
    assert ztoc["annotations"]["com.amazon.soci.image-layer-digest"] == soci_image.layer["digest"]


def test_a_small_file_costs_a_span_not_the_layer(mount: Mount, soci_image: SociImage) -> None:
    rootfs = soci_image.image(mount) / "rootfs"
    assert (rootfs / "etc/os-release").read_bytes() == FILES["etc/os-release"]
    fetched = soci_image.proxy.blob_bytes(str(soci_image.layer["digest"]))
    size = int(soci_image.layer["size"])  # type: ignore[call-overload]
    assert fetched < size / 5, (fetched, size)
    assert soci_image.proxy.whole_blob_gets[soci_image.blob_path] == 0
    written(mount, "indexed from its SOCI zTOC")
    access = os.getxattr(soci_image.image(mount) / "0", "user.regfs.access").decode()
    assert access == (f"SOCI v1 zTOC {soci_image.ztoc} (a referrer, allowed by "
                      "--soci-v1-referrers: not covered by the image digest): spans fetched "
                      "as read")  # fmt: skip


def test_without_the_option_a_v1_index_is_not_even_looked_for(
    default_mount: Mount, soci_image: SociImage
) -> None:
    """A v1 index is covered by no digest the user named: with no option, regfs fetches
    no index (the referrers it asks for are for a start record), and reads the layer
    whole, checked against its digest. (It cannot say an index was ignored without
    fetching it: it says nothing.)"""
    rootfs = soci_image.image(default_mount) / "rootfs"
    assert (rootfs / "etc/os-release").read_bytes() == FILES["etc/os-release"]
    assert soci_image.proxy.whole_blob_gets[soci_image.blob_path] == 1
    assert soci_image.v1_requests() == []
    index, _ = soci.v1_index(soci_image.url, soci_image.repository, soci_image.manifest)
    assert not [path for path in soci_image.proxy.requests_by_path
                if soci_image.ztoc in path or index in path]  # fmt: skip
    access = os.getxattr(soci_image.image(default_mount) / "0", "user.regfs.access")
    assert access == b"whole layer (gzip): fetched once, checked, indexed"
    assert "SOCI" not in default_mount.log()


def test_the_config_file_allows_v1_referrers_and_the_option_overrides_it(
    tmp_path: Path, soci_image: SociImage
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[soci]\nv1-referrers = true\n")
    for options, lazy in ((), True), (("--no-soci-v1-referrers",), False):
        soci_image.proxy.reset()
        mount = Mount(tmp_path / f"mnt{len(options)}", "--config", str(config), *options)
        try:
            os.listdir(soci_image.image(mount) / "0")
            access = os.getxattr(soci_image.image(mount) / "0", "user.regfs.access")
            assert access.startswith(b"SOCI v1 zTOC") == lazy, access
            assert (soci_image.v1_requests() != []) == lazy
            status = json.loads(run_regfs("status", "--json", str(mount.path)).stdout)
            assert status["options"]["soci_v1_referrers"] is lazy
        finally:
            mount.close()


def test_prefetch_reads_spans_only_with_the_option(tmp_path: Path, soci_image: SociImage) -> None:
    image = f"{soci_image.proxy.host}/{soci_image.repository}:1"
    for options, lazy in ((), False), (("--soci-v1-referrers",), True):
        soci_image.proxy.reset()
        done = run_regfs("prefetch", "--cache-dir", str(tmp_path / f"cache{lazy}"), *options,
                         image, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert ("SOCI v1 zTOC" in done.stdout) == lazy, done.stdout
        assert soci_image.proxy.whole_blob_gets[soci_image.blob_path] == (0 if lazy else 1)
        assert (soci_image.v1_requests() != []) == lazy


def test_every_file_and_name_is_the_image_s(mount: Mount, soci_image: SociImage) -> None:
    image = soci_image.image(mount)
    for top in (image / "rootfs", image / "0"):
        assert sorted(os.listdir(top)) == ["big.bin", "empty", "etc", "usr"]
        for name, data in FILES.items():
            assert (top / name).read_bytes() == data, name
    assert soci_image.proxy.whole_blob_gets[soci_image.blob_path] == 0
    assert sorted(os.listdir(image.parent)) == ["1"]  # the referrers tag is not an image


def test_a_span_damaged_on_the_way_is_fetched_again(mount: Mount, soci_image: SociImage) -> None:
    rootfs = soci_image.image(mount) / "rootfs"
    os.listdir(rootfs)  # the zTOC, read before the fault
    soci_image.proxy.faults = [("/blobs/", "corrupt")]
    with open(rootfs / "big.bin", "rb") as file:
        file.seek(5 * SPAN)
        assert file.read(SPAN) == FILES["big.bin"][5 * SPAN : 6 * SPAN]
    assert not soci_image.proxy.faults  # the fault was met
    once_more = r"span at \d+ does not match its digest sha256:\w+; fetching it once more"
    assert re.search(once_more, mount.log())


def _annotated(soci_image: SociImage, annotations: dict[str, str], tag: str) -> bytes:
    """The image's manifest with ``annotations`` (another digest), pushed as ``tag``."""
    return soci.annotated(soci_image.url, soci_image.repository, soci_image.manifest,
                          annotations, tag)  # fmt: skip


def test_a_ztoc_that_is_not_one_means_the_whole_layer(mount: Mount, soci_image: SociImage) -> None:
    """A referrer whose zTOC is garbage: one warning, and the layer is read whole, checked
    against its digest."""
    image = _annotated(soci_image, {"test": "garbage zTOC"}, "garbage")
    ztoc = upload_blob(soci_image.url, soci_image.repository, b"\x10\x00\x00\x00 not a zTOC")
    layer = Descriptor(str(soci_image.layer["mediaType"]),
                       Digest.parse(str(soci_image.layer["digest"])), 0)  # fmt: skip
    subject = Descriptor(OCI_MANIFEST, Digest.of(image), len(image))
    upload_blob(soci_image.url, soci_image.repository, b"{}")
    index = soci_index_manifest(
        [(Descriptor("application/octet-stream", Digest.parse(str(ztoc["digest"])),
                     int(ztoc["size"])), layer)],  # type: ignore[call-overload]
        subject, SPAN, "test",
    )  # fmt: skip
    soci.put_manifest(
        soci_image.url, soci_image.repository, str(Digest.of(index)), index, OCI_MANIFEST
    )
    referrers = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": str(Digest.of(index)), "size": len(index),
         "artifactType": SOCI_INDEX_V1}]}  # fmt: skip
    soci.put_manifest(soci_image.url, soci_image.repository, referrers_tag(Digest.of(image)),
         json.dumps(referrers).encode(), OCI_INDEX)  # fmt: skip
    mount.allow_log(r"SOCI zTOC not used \(flatbuffer: ")
    rootfs = soci_image.image(mount, "garbage") / "rootfs"
    assert (rootfs / "etc/os-release").read_bytes() == FILES["etc/os-release"]
    assert "SOCI zTOC not used (flatbuffer: " in mount.log()
    assert soci_image.proxy.whole_blob_gets[soci_image.blob_path] == 1
    access = os.getxattr(soci_image.image(mount, "garbage") / "0", "user.regfs.access")
    assert access.startswith(b"whole layer (gzip): fetched once, checked, indexed; its SOCI zTOC")


def test_a_soci_v2_image_names_its_index(default_mount: Mount, soci_image: SociImage) -> None:
    """SOCI v2: the image manifest's annotation names the index (no referrers needed), so
    a mount with no option uses it."""
    mount = default_mount
    soci.push_v2(soci_image.url, soci_image.repository, soci_image.manifest, "v2")
    rootfs = soci_image.image(mount, "v2") / "rootfs"
    assert (rootfs / "usr/share/doc/words.txt").read_bytes() == FILES["usr/share/doc/words.txt"]
    assert soci_image.proxy.whole_blob_gets[soci_image.blob_path] == 0
    assert "named by the image manifest" in mount.log()
    assert soci_image.v1_requests() == []
    access = os.getxattr(soci_image.image(mount, "v2") / "0", "user.regfs.access").decode()
    assert access == (f"SOCI v2 zTOC {soci_image.ztoc} (named by the image manifest): "
                      "spans fetched as read")  # fmt: skip


def test_an_index_listing_the_soci_v2_index_beside_its_image_shows_the_image(
    tmp_path: Path, default_mount: Mount, soci_image: SociImage
) -> None:
    """As ``soci convert`` makes it: an image index listing the SOCI v2 index (first,
    here) beside its image, both with the image's platform. The mount's index dir shows
    and links the image, and ``regfs prefetch`` fetches the image's layer: both skip the
    index, an artifact (before, both took the first entry of the platform)."""
    v2_index, image = soci.push_v2(soci_image.url, soci_image.repository,
                                   soci_image.manifest, "v2")  # fmt: skip
    amd64 = {"os": "linux", "architecture": "amd64"}
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": str(Digest.of(v2_index)), "size": len(v2_index),
         "platform": amd64, "artifactType": SOCI_INDEX_V2},
        {"mediaType": OCI_MANIFEST, "digest": str(Digest.of(image)), "size": len(image),
         "platform": amd64},
    ]}).encode()  # fmt: skip
    soci.put_manifest(soci_image.url, soci_image.repository, "converted", index, OCI_INDEX)
    converted = soci_image.image(default_mount, "converted")
    assert os.readlink(converted / "linux-amd64") == f"../{Digest.of(image).dir_name}"
    rootfs = converted / "rootfs"
    assert (rootfs / "etc/os-release").read_bytes() == FILES["etc/os-release"]
    name = f"{soci_image.proxy.host}/{soci_image.repository}:converted"
    done = run_regfs("prefetch", "--cache-dir", str(tmp_path / "cache"), "--platform",
                     "linux/amd64", name, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"{Digest.of(image)} layer 0: cached and verified" in done.stdout


def test_an_image_without_the_index_reads_the_shared_layer_itself(
    mount: Mount, soci_image: SociImage
) -> None:
    """The same layer in an image with a SOCI index and in one without: each reads it its
    own way (a listing of the first must not stand for the second's)."""
    _annotated(soci_image, {"test": "no SOCI index"}, "plain")
    with_index = soci_image.image(mount) / "0"
    without = soci_image.image(mount, "plain") / "0"
    assert sorted(os.listdir(with_index)) == ["big.bin", "empty", "etc", "usr"]
    assert sorted(os.listdir(without)) == ["big.bin", "empty", "etc", "usr"]
    assert os.getxattr(with_index, "user.regfs.access").startswith(b"SOCI v1 zTOC")
    assert os.getxattr(without, "user.regfs.access").startswith(b"whole layer (gzip)")
    assert (without / "etc/os-release").read_bytes() == FILES["etc/os-release"]


def test_index_push_takes_a_push_token_with_the_users_credentials(
    tmp_path: Path, token_registry: tuple[Registry, TokenServer]
) -> None:
    """registry:2 behind a token server: the push asks for a ``pull,push`` token with the
    credentials of the auth file, and a mount with the same file reads the layer by spans."""
    registry, tokens = token_registry
    auth = auth_json(tmp_path / "auth.json", registry.host, *PUSHER)
    anonymous = run_regfs("index", "push", "--min-layer-size", "0",
                          f"{registry.host}/public/img:1")  # fmt: skip
    assert anonymous.returncode == 1 and "with no credentials: HTTP 401" in anonymous.stderr
    pushed = run_regfs("index", "push", "--min-layer-size", "0", "--auth-file", str(auth),
                       f"{registry.host}/public/img:1", timeout=120)  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr
    assert any("repository:public/img:pull,push" in scope
               for request in tokens.requests for scope in request.get("scope", []))  # fmt: skip
    mount = Mount(tmp_path / "mnt", "--auth-file", str(auth), "--soci-v1-referrers")
    try:
        os.listdir(mount / registry.host / "public/img/1/rootfs")
        written(mount, "indexed from its SOCI zTOC")
    finally:
        mount.close()


def _spread_files(blob: Path) -> dict[str, bytes]:
    """Regular files spread over a gzip layer, in tar order (the first, every fifth part,
    the last, the largest) with their bytes, as Python's tarfile reads them."""
    with tarfile.open(blob, "r|gz") as archive:
        files = [(m.name, m.size) for m in archive if m.isreg() and m.size]
    count = len(files)
    chosen = {files[i * (count - 1) // 5][0] for i in range(6)} | {
        max(files, key=lambda f: f[1])[0]
    }
    contents = {}
    with tarfile.open(blob, "r|gz") as archive:
        for member in archive:
            if member.name in chosen:
                extracted = archive.extractfile(member)
                assert extracted is not None
                contents[member.name.removeprefix("./").lstrip("/")] = extracted.read()
    return contents


def test_index_push_indexes_a_real_debian_layer(tmp_path: Path, layered: Layered) -> None:
    """The layered image's minbase Debian layer (umoci's gzip, ~60 MB): the zTOC is made
    with the default span size (indexed_gzip records a seek point at the end of such a
    stream, which must not begin a span), and files all over it read back span by span
    through a fresh mount, without the layer being downloaded whole."""
    registry = Registry(tmp_path / "registry")
    proxy = CountingProxy(registry.port)
    try:
        images.push(layered.layout, "1", f"{registry.host}/debian/soci:1")
        result = run_regfs("index", "push", f"{registry.host}/debian/soci:1", timeout=300)
        assert result.returncode == 0, result.stderr
        manifest, _, _ = images.get_manifest(registry.url, "debian/soci", "1")
        debian = json.loads(manifest)["layers"][0]
        assert f"{debian['digest']}: zTOC sha256:" in result.stdout
        expected = _spread_files(layered.layout / "blobs/sha256" / debian["digest"][7:])
        mount = Mount(tmp_path / "mnt", "--soci-v1-referrers")
        try:
            layer = mount / proxy.host / "debian/soci/1/0"
            for name, data in expected.items():
                assert (layer / name).read_bytes() == data, name
            assert os.getxattr(layer, "user.regfs.access").startswith(b"SOCI v1 zTOC")
            assert proxy.whole_blob_gets[f"/v2/debian/soci/blobs/{debian['digest']}"] == 0
            assert proxy.blob_bytes(debian["digest"]) < debian["size"] / 2
        finally:
            mount.close()
    finally:
        proxy.stop()
        registry.stop()
