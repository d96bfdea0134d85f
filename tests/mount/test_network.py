"""regfs over an emulated network (``tests/support/netprofiles.py``): the registry 100 ms
away at 20 Mbit/s (``far``), or 300 ms at 4 Mbit/s (``HOTEL``: hotel Wi-Fi). A cold read
completes with the right bytes and nothing times out that keeps making progress, whether a
layer is streamed whole (gzip) or read by its chunks (eStargz), and whether the request
streams it or waits for work that does (a layer store's ``info``, another reader's Range
request)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.mount.conftest import Pushed
from tests.support import images
from tests.support.estargz import EstargzConverter
from tests.support.mount import Mount
from tests.support.netprofiles import MBIT, PROFILES, NetworkProfile
from tests.support.podman import Podman
from tests.support.programs import build_program_image
from tests.support.proxy import CountingProxy
from tests.support.registry import Registry

pytestmark = pytest.mark.mount

FAR = PROFILES["far"]
HOTEL = NetworkProfile("hotel", rtt=0.300, bandwidth=4 * MBIT)


def far_proxy(port: int) -> Iterator[CountingProxy]:
    proxy = CountingProxy(port, profile=FAR)
    yield proxy
    proxy.stop()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    """A registry of its own: the session's has 61 catalog pages, read one after another
    when a name is looked up, which on ``far`` is 6 s before anything else."""
    started = Registry(tmp_path / "registry")
    yield started
    started.stop()


@pytest.fixture
def registry_far(registry: Registry) -> Iterator[CountingProxy]:
    yield from far_proxy(registry.port)


def test_a_gzip_layer_longer_to_stream_than_the_timeout_completes_on_far(
    registry: Registry, registry_far: CountingProxy, tmp_path: Path
) -> None:
    """A plain gzip layer is streamed whole before any of it is served: its 12.6 MB take
    5 s at 20 Mbit/s, longer than the --timeout of 2 s given here (as an 80 MB layer is
    against the default 30 s), so this holds only because a request's deadline is
    --timeout without progress, not in all."""
    files = {"big.bin": os.urandom(12 << 20), "etc/os-release": b"ID=far\n"}
    images.build_image(tmp_path / "oci", "far", files)
    images.push(tmp_path / "oci", "far", f"{registry.host}/network/gzip:1")
    mount = Mount(tmp_path / "mnt", "--timeout", "2")
    try:
        start = time.monotonic()
        rootfs = mount / registry_far.host / "network/gzip/1/rootfs"
        assert (rootfs / "etc/os-release").read_bytes() == files["etc/os-release"]
        seconds = time.monotonic() - start
        assert (rootfs / "big.bin").read_bytes() == files["big.bin"]
    finally:
        mount.close()
    fetched = registry_far.blob_bytes()
    # the link really was slow: what came through it took its rate's time, and more
    assert seconds >= fetched / FAR.bandwidth > 2, (seconds, fetched)
    assert "no answer within" not in mount.log()


def pushed_estargz(
    registry: Registry, estargz: EstargzConverter, tmp_path: Path, repository: str,
    files: dict[str, bytes], *options: str,
) -> dict[str, Any]:  # fmt: skip
    """``files`` as the one-layer eStargz image ``REPOSITORY:1`` (ctr-remote ``options``);
    its layer's descriptor."""
    images.build_image(tmp_path / "oci", "far", files)
    estargz.push(tmp_path / "oci", "far", f"{registry.host}/{repository}:1", *options)
    body, _, _ = images.get_manifest(registry.url, repository, "1")
    (layer,) = json.loads(body)["layers"]
    return dict(layer)


def test_a_cold_lazy_read_of_an_estargz_image_completes_on_far(
    registry: Registry, registry_far: CountingProxy, estargz: EstargzConverter, tmp_path: Path
) -> None:
    """A file of an eStargz layer costs a few round trips and its chunks, not the layer."""
    files = {"big.bin": os.urandom(6 << 20), "etc/os-release": b"ID=far\n"}
    layer = pushed_estargz(registry, estargz, tmp_path, "network/estargz", files)
    mount = Mount(tmp_path / "mnt")
    try:
        start = time.monotonic()
        rootfs = mount / registry_far.host / "network/estargz/1/rootfs"
        assert (rootfs / "etc/os-release").read_bytes() == files["etc/os-release"]
        seconds = time.monotonic() - start
        assert (rootfs / "big.bin").read_bytes() == files["big.bin"]
    finally:
        mount.close()
    assert 2 * FAR.rtt <= seconds < layer["size"] / FAR.bandwidth  # not the layer's time
    assert registry_far.range_requests >= 2  # the footer and TOC, then the chunks
    assert registry_far.blob_bytes(layer["digest"]) <= layer["size"] * 1.1


def test_what_an_estargz_builder_marked_comes_with_one_stream_on_far(
    registry: Registry, registry_far: CountingProxy, estargz: EstargzConverter, tmp_path: Path
) -> None:
    """An eStargz image converted with a record: the marked file's chunks come with the
    stream of the blob's start, begun while its TOC is fetched: three requests of the
    blob (footer, TOC, stream), the file read right, in about its bytes' time on the link."""
    files = {"app/data.bin": os.urandom(6 << 20), "etc/os-release": b"ID=far\n"}
    record = tmp_path / "record.json"
    record.write_text(json.dumps({"path": "app/data.bin"}) + "\n")
    layer = pushed_estargz(registry, estargz, tmp_path, "network/prefetched", files,
                           "--estargz-record-in", str(record))  # fmt: skip
    mount = Mount(tmp_path / "mnt")
    try:
        start = time.monotonic()
        rootfs = mount / registry_far.host / "network/prefetched/1/rootfs"
        assert (rootfs / "app/data.bin").read_bytes() == files["app/data.bin"]
        seconds = time.monotonic() - start
    finally:
        mount.close()
    path = f"/v2/network/prefetched/blobs/{layer['digest']}"
    assert registry_far.requests_by_path[path] == 3, registry_far.requests_by_path
    assert registry_far.blob_bytes(layer["digest"]) <= layer["size"] * 1.05
    assert seconds < layer["size"] / FAR.bandwidth + 10 * FAR.rtt, seconds
    assert "prefetched the first" in mount.log()


def test_podman_through_the_store_waits_for_a_layer_longer_to_stream_than_the_timeout(
    registry: Registry, registry_far: CountingProxy, tmp_path: Path
) -> None:
    """podman's ``info`` for a plain gzip layer waits for its download, which the mount's
    background indexing does (it began with the lookup of the image's first layer): the
    download's progress is the waiting request's, so a layer that takes longer than
    --timeout to stream (12.6 MB against 2 s here, as 80 MB against the default 30 s) is
    served, and podman does not fall back to pulling it again itself."""
    build_program_image(tmp_path / "oci", "far", big_file_size=12 << 20)
    reference = f"{registry.host}/network/store:1"
    images.push(tmp_path / "oci", "far", reference)
    body, _, _ = images.get_manifest(registry.url, "network/store", "1")
    layers = [(layer["digest"], layer["size"]) for layer in json.loads(body)["layers"]]
    assert layers[0][1] / FAR.bandwidth > 2 * 2  # well over the timeout
    store = Mount(tmp_path / "store", "--layer-store", "--timeout", "2")
    podman = Podman(tmp_path / "podman", store.path, [registry_far.host])
    try:
        result = podman.run(f"{registry_far.host}/network/store:1", "/usr/bin/cat",
                            "/etc/os-release")  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stdout == Path("/etc/os-release").read_text()
        assert podman.store_layers() == len(layers)
    finally:
        podman.close()
        store.close()
    for digest, size in layers:  # each downloaded once, by regfs
        assert registry_far.blob_bytes(digest) == size
    assert "no answer within" not in store.log()


def test_big_files_of_an_estargz_image_read_at_once_on_a_link_slower_than_the_timeout(
    registry: Registry, estargz: EstargzConverter, tmp_path: Path
) -> None:
    """At 4 Mbit/s one Range request of a run of eStargz chunks (up to 4 MiB) takes 8 s,
    longer than the --timeout of 3 s given here: it was EIO ("no answer within 3s") though
    its bytes kept coming. Three readers at once, two of them of the same file (one waits
    for the other's Range requests), get the right bytes; a stat and a listing of the image
    meanwhile do not wait behind the downloads."""
    files = {"big.bin": os.urandom(6 << 20), "other.bin": os.urandom(3 << 20),
             "etc/os-release": b"ID=hotel\n"}  # fmt: skip
    pushed_estargz(registry, estargz, tmp_path, "network/hotel", files)
    proxy = CountingProxy(registry.port, profile=HOTEL)
    mount = Mount(tmp_path / "mnt", "--timeout", "3")
    try:
        image = mount / proxy.host / "network/hotel/1"
        assert (image / "rootfs/etc/os-release").read_bytes() == files["etc/os-release"]
        readers = [
            (name, subprocess.Popen(["sha256sum", image / "rootfs" / name], stdout=subprocess.PIPE))
            for name in ("big.bin", "other.bin", "big.bin")
        ]
        time.sleep(2)
        start = time.monotonic()
        os.stat(image)
        assert "rootfs" in os.listdir(image)
        assert time.monotonic() - start < 2 * HOTEL.rtt + 1
        for name, reader in readers:
            out, _ = reader.communicate(timeout=120)
            assert reader.returncode == 0, name
            assert out.split()[0].decode() == hashlib.sha256(files[name]).hexdigest(), name
    finally:
        mount.close()
        proxy.stop()
    assert (6 + 3) * 2**20 / HOTEL.bandwidth > 3 * 3  # the link really was slow


def test_names_below_a_host_whose_catalog_pages_outlast_the_timeout_are_found_on_far(
    pushed: Pushed, tmp_path: Path
) -> None:
    """The session registry's catalog is 61 pages (two names each), read one after another
    when a name below the host is first looked up: 6 s on ``far``, each page 0.1 s. With
    --timeout 2 every lookup below the host was EIO ("/v2/_catalog: no answer within 2s",
    and the host noted unreachable), manifests included; each page is progress."""
    proxy = CountingProxy(pushed.registry.port, profile=FAR)
    mount = Mount(tmp_path / "mnt", "--timeout", "2")
    try:
        host = mount / proxy.host
        manifest = (host / "library/debian/bookworm/manifest").read_bytes()
        assert b"layers" in manifest
        assert "library" in os.listdir(host)
    finally:
        mount.close()
        proxy.stop()
    assert proxy.requests_by_path["/v2/_catalog"] * FAR.rtt > 2  # longer than the timeout
    assert "no answer within" not in mount.log()


def test_a_marked_file_far_into_the_start_stream_is_read_on_a_link_slower_than_the_timeout(
    registry: Registry, estargz: EstargzConverter, tmp_path: Path
) -> None:
    """An eStargz image whose builder marked two files, the one read 6 MiB into the
    marked region: at 4 Mbit/s the stream of the blob's start reaches it after 12 s, past
    the --timeout of 3 s, and the read waits for that stream while it flows; it was EIO."""
    files = {"app/first.bin": os.urandom(6 << 20), "app/second.bin": os.urandom(1 << 20),
             "etc/os-release": b"ID=hotel\n"}  # fmt: skip
    record = tmp_path / "record.json"
    record.write_text("".join(json.dumps({"path": path}) + "\n" for path in list(files)[:2]))
    pushed_estargz(registry, estargz, tmp_path, "network/marked", files,
                   "--estargz-record-in", str(record))  # fmt: skip
    proxy = CountingProxy(registry.port, profile=HOTEL)
    mount = Mount(tmp_path / "mnt", "--timeout", "3")
    try:
        second = mount / proxy.host / "network/marked/1/rootfs/app/second.bin"
        assert second.read_bytes() == files["app/second.bin"]
    finally:
        mount.close()
        proxy.stop()
    assert "prefetched the first" in mount.log()


def test_a_kept_catalog_is_not_shown_stale_for_a_far_registry_that_keeps_answering(
    pushed: Pushed, tmp_path: Path
) -> None:
    """A second mount on the same cache asks for the 61-page catalog again with a kept
    one to fall back on, so the registry gets half of --timeout 4: 2 s, where its pages
    take 6 s on ``far``, each in 0.1 s. It was 'cannot be reached', and the kept catalog
    was shown marked stale with a warning."""
    proxy = CountingProxy(pushed.registry.port, profile=FAR)
    cache = tmp_path / "cache"
    try:
        for name in ("first", "second"):
            mount = Mount(tmp_path / name, "--timeout", "4", "--cache-dir", str(cache))
            try:
                assert "library" in os.listdir(mount / proxy.host)
                with pytest.raises(OSError):
                    os.getxattr(mount / proxy.host, "user.regfs.stale")
            finally:
                mount.close()
    finally:
        proxy.stop()
    assert "cannot be reached" not in mount.log()


DIAL_UP = NetworkProfile("dial-up", rtt=0.100, bandwidth=1 * MBIT)


def test_many_files_read_at_once_on_a_link_shared_slower_than_the_timeout_all_arrive(
    registry: Registry, estargz: EstargzConverter, tmp_path: Path
) -> None:
    """At 1 Mbit/s, eight Range requests at once get 16 KB/s each. A body had to bring
    64 KiB every --timeout (3 s here) whatever the others took of the link, so healthy
    requests failed as "too slow" (EIO); as did a body smaller than 64 KiB whose last bytes
    came after 3 s. Eight readers at once get the right bytes."""
    files = {f"f{n}.bin": os.urandom(400 << 10) for n in range(8)}
    pushed_estargz(registry, estargz, tmp_path, "network/dial-up", files)
    proxy = CountingProxy(registry.port, profile=DIAL_UP)
    mount = Mount(tmp_path / "mnt", "--timeout", "3")
    try:
        rootfs = mount / proxy.host / "network/dial-up/1/rootfs"
        assert sorted(os.listdir(rootfs)) == sorted(files)
        readers = {name: subprocess.Popen(["sha256sum", rootfs / name], stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE) for name in files}  # fmt: skip
        for name, reader in readers.items():
            out, err = reader.communicate(timeout=60)
            assert reader.returncode == 0, (name, err)
            assert out.split()[0].decode() == hashlib.sha256(files[name]).hexdigest(), name
    finally:
        mount.close()
        proxy.stop()
    assert sum(map(len, files.values())) / DIAL_UP.bandwidth > 3 * 2  # the link was slow
