"""Laziness, the on-disk cache and damaged blobs, counted by a proxy in front of registry:2."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mount.conftest import Layered
from tests.support import images
from tests.support.crafted import ZSTD_LAYER, member, push_layers, tar_of
from tests.support.mount import Mount
from tests.support.net import wait_until
from tests.support.proxy import CountingProxy

pytestmark = pytest.mark.mount


@pytest.fixture
def fresh(layered_proxy: CountingProxy) -> Iterator[CountingProxy]:
    proxy = layered_proxy
    proxy.reset()
    proxy.corrupt = proxy.truncate = False
    yield proxy
    proxy.corrupt = proxy.truncate = False
    proxy.blob_encoding = None
    proxy.range_delay = 0.0


def manifest(layered: Layered) -> dict[str, object]:
    return json.loads(images.get_manifest(layered.registry.url, "layered/oci", "1")[0])  # type: ignore[no-any-return]


def layer_digests(layered: Layered) -> list[str]:
    return [layer["digest"] for layer in manifest(layered)["layers"]]  # type: ignore[attr-defined]


def image_via(mount: Mount, proxy: CountingProxy) -> Path:
    return mount / proxy.host / "layered/oci/1"


def layer_blob(layered: Layered, digest: str) -> Path:
    return layered.layout / "blobs" / "sha256" / digest.split(":")[1]


def chunk_files(cache: Path) -> list[Path]:
    return [p for p in (cache / "chunks").rglob("*") if p.is_file() and not p.name.startswith(".")]


def test_listing_an_image_fetches_no_layer(
    tmp_path: Path, layered: Layered, fresh: CountingProxy
) -> None:
    mount = Mount(tmp_path / "mnt")
    try:
        image = image_via(mount, fresh)
        # ls -l probes security.selinux and POSIX ACLs on every entry, 0/ and rootfs/ too
        subprocess.run(["ls", "-la", str(image), str(image) + "/"], check=True, capture_output=True)
        assert fresh.blob_bytes() == 0
        assert not list((tmp_path / "mnt.cache" / "indexes").glob("*.sqlite"))
    finally:
        mount.close()


def test_a_layer_is_fetched_once_when_first_read(
    tmp_path: Path, layered: Layered, fresh: CountingProxy
) -> None:
    digests = layer_digests(layered)
    mount = Mount(tmp_path / "mnt")
    try:
        image = image_via(mount, fresh)
        assert (image / "1/etc/issue").read_text() == "regfs layered image\n"
        assert fresh.blob_bytes() == fresh.blob_bytes(digests[1])  # layer 1 and nothing else
        assert fresh.blob_bytes(digests[1]) == layer_blob(layered, digests[1]).stat().st_size
        (image / "1/regfs-test/big.bin").read_bytes()
        assert fresh.blob_bytes() == layer_blob(layered, digests[1]).stat().st_size
    finally:
        mount.close()


def test_blobs_labelled_with_a_content_encoding_are_read_as_stored(
    tmp_path: Path, layered: Layered, fresh: CountingProxy
) -> None:
    """An object store serving a gzip layer (and the JSON config) with ``Content-Encoding:
    gzip``: the digest covers the stored bytes, so regfs must not decode them."""
    fresh.blob_encoding = "gzip"
    mount = Mount(tmp_path / "mnt")
    try:
        image = image_via(mount, fresh)
        assert (image / "1/etc/issue").read_text() == "regfs layered image\n"
        assert json.loads((image / "config").read_bytes())["rootfs"]["type"] == "layers"
    finally:
        mount.close()


def test_a_remount_fetches_nothing_again(
    tmp_path: Path, layered: Layered, fresh: CountingProxy
) -> None:
    """What one mount read, a later mount on the same cache dir reads with no blob request.
    The first mount reads the same paths: a lookup in rootfs/ indexes only the layers from the
    top down to the one that answers, and the others in the background, which unmounting cuts."""
    cache = tmp_path / "cache"
    expected = (layered.oracle_rootfs / "regfs-test/big.bin").read_bytes()

    def read_all(image: Path) -> None:
        assert (image / "rootfs/etc/issue").read_text() == "regfs layered image\n"
        assert (image / "rootfs/regfs-test/big.bin").read_bytes() == expected
        assert "sh" in os.listdir(image / "0/usr/bin")

    first = Mount(tmp_path / "first", "--cache-dir", str(cache))
    try:
        read_all(image_via(first, fresh))
    finally:
        first.close()
    assert fresh.blob_bytes() > 0
    fresh.reset()
    second = Mount(tmp_path / "second", "--cache-dir", str(cache))
    try:
        read_all(image_via(second, fresh))
        assert fresh.blob_bytes() == 0
    finally:
        second.close()


def deepest_file(blob: Path) -> tarfile.TarInfo:
    """The regular file whose data lies furthest into the layer (an oracle: Python's tar)."""
    with tarfile.open(blob, "r:gz") as archive:
        files = [member for member in archive if member.isfile() and member.size > 4096]
    return max(files, key=lambda member: member.offset_data)


def test_evicted_chunks_are_fetched_again_from_the_nearest_checkpoint(
    tmp_path: Path, layered: Layered, fresh: CountingProxy
) -> None:
    layer0 = layer_blob(layered, layer_digests(layered)[0])
    member = deepest_file(layer0)
    expected = (layered.oracle_rootfs / member.name).read_bytes()
    cache = tmp_path / "cache"
    mount = Mount(tmp_path / "mnt", "--cache-dir", str(cache))
    try:
        image = image_via(mount, fresh)
        os.listdir(image / "0")  # indexes layer 0: every chunk lands in the cache
        for chunk in chunk_files(cache):
            chunk.unlink()  # as if evicted (the daemon also keeps a few in memory)
        fresh.reset()
        data = (image / "0" / member.name).read_bytes()
    finally:
        mount.close()
    assert data == expected
    fetched = fresh.blob_bytes()
    assert 0 < fetched < layer0.stat().st_size / 10, f"{fetched} of {layer0.stat().st_size}"


def test_a_multi_frame_zstd_layer_is_re_read_from_the_frame_before_a_chunk(
    tmp_path: Path, layered: Layered, fresh: CountingProxy
) -> None:
    """A layer compressed by ``pzstd`` (a frame per piece, each after a skippable frame):
    an evicted chunk is fetched again from the frame before it, not from byte 0."""
    files = {f"f{n}": os.urandom(3 << 20) for n in range(6)}
    (tmp_path / "layer.tar").write_bytes(tar_of(
        [member(name, data) for name, data in files.items()], tarfile.PAX_FORMAT
    ))  # fmt: skip
    subprocess.run(["pzstd", "-q", "-p", "2", str(tmp_path / "layer.tar")], check=True)
    blob = (tmp_path / "layer.tar.zst").read_bytes()
    push_layers(layered.registry.url, "multi-frame/zstd:1", [blob], media_type=ZSTD_LAYER)
    cache = tmp_path / "cache"
    mount = Mount(tmp_path / "mnt", "--cache-dir", str(cache))
    try:
        rootfs = mount / fresh.host / "multi-frame/zstd/1/rootfs"
        assert sorted(os.listdir(rootfs)) == sorted(files)  # indexes the layer
        for chunk in chunk_files(cache):
            chunk.unlink()
        fresh.reset()
        assert (rootfs / "f5").read_bytes() == files["f5"]
        fetched = fresh.blob_bytes()
        assert {name: (rootfs / name).read_bytes() for name in files} == files
    finally:
        mount.close()
    # pzstd's frames hold 8 MiB here: f5's first chunk restarts at the frame before it;
    # from byte 0, each of its 4 chunks would cost ~16 MiB
    assert 0 < fetched <= 4 * len(files["f5"]), f"{fetched} of {len(blob)}"


def test_damaged_chunks_on_disk_are_never_served(
    tmp_path: Path, layered: Layered, fresh: CountingProxy
) -> None:
    cache = tmp_path / "cache"
    first = Mount(tmp_path / "first", "--cache-dir", str(cache))
    try:
        (image_via(first, fresh) / "1/etc/issue").read_bytes()
    finally:
        first.close()
    for chunk in chunk_files(cache):  # a torn or tampered cache
        data = bytearray(chunk.read_bytes())
        data[len(data) // 2] ^= 0xFF
        chunk.write_bytes(data)
    second = Mount(tmp_path / "second", "--cache-dir", str(cache))
    second.allow_log(r"in the cache is damaged: removed, will fetch again")
    try:
        big = (image_via(second, fresh) / "1/regfs-test/big.bin").read_bytes()
        assert big == (layered.oracle_rootfs / "regfs-test/big.bin").read_bytes()
        assert "damaged: removed, will fetch again" in second.log()
    finally:
        second.close()


@pytest.mark.parametrize("damage", ["corrupt", "truncate"])
def test_a_damaged_blob_is_eio_and_the_next_read_works(
    tmp_path: Path, layered: Layered, fresh: CountingProxy, damage: str
) -> None:
    setattr(fresh, damage, True)
    mount = Mount(tmp_path / "mnt", "--timeout", "5")
    digest = layer_digests(layered)[1]
    mount.allow_log(rf"{digest}(: layer blob: \d+ bytes hashing to| after \d+ bytes: Remote)")
    try:
        issue = image_via(mount, fresh) / "1/etc/issue"
        with pytest.raises(OSError) as caught:
            issue.read_bytes()
        assert caught.value.errno == errno.EIO
        assert digest in mount.log()  # one line names the blob
        setattr(fresh, damage, False)
        assert issue.read_text() == "regfs layered image\n"
    finally:
        mount.close()


@contextlib.contextmanager
def evicted_big_file(
    tmp_path: Path, proxy: CountingProxy, timeout: int
) -> Iterator[tuple[Mount, Path]]:
    """A mount, and ``big.bin`` of layer 1 once its layer is indexed and every chunk
    evicted again: its reads are re-fetches."""
    cache = tmp_path / "cache"
    mount = Mount(tmp_path / "mnt", "--cache-dir", str(cache), "--timeout", str(timeout))
    try:
        big = image_via(mount, proxy) / "1/regfs-test/big.bin"
        os.listdir(big.parent)
        for chunk in chunk_files(cache):
            chunk.unlink()
        yield mount, big
    finally:
        mount.close()


def test_a_damaged_range_is_eio(tmp_path: Path, fresh: CountingProxy) -> None:
    with evicted_big_file(tmp_path, fresh, timeout=5) as (mount, big):
        mount.allow_log(r"chunk \d+ does not match its digest sha256:")
        fresh.corrupt = True
        with pytest.raises(OSError) as caught:
            big.read_bytes()
        assert caught.value.errno == errno.EIO
        assert "does not match its digest sha256:" in mount.log()


def test_a_range_answer_damaged_once_is_fetched_again(
    tmp_path: Path, layered: Layered, fresh: CountingProxy
) -> None:
    """A byte flipped in one Range answer: every byte read is still right. (A flip in what
    the chunk is made from fails its hash and the chunk is fetched once more; one in the
    bytes inflated before it, in a stored block, changes nothing it keeps: the unit tests of
    ``layers/readers.py`` show both.)"""
    with evicted_big_file(tmp_path, fresh, timeout=5) as (_mount, big):
        fresh.faults = [("/blobs/", "corrupt")]
        expected = (layered.oracle_rootfs / "regfs-test/big.bin").read_bytes()
        assert big.read_bytes() == expected
        assert fresh.faults == []


def test_a_re_fetch_has_one_deadline_for_all_its_range_requests(
    tmp_path: Path, fresh: CountingProxy
) -> None:
    """A re-fetch is one Range request; answered after 4.5 s, the read fails by its one 3 s
    deadline (shared by everything the read asks of the registry), not when it comes."""
    with evicted_big_file(tmp_path, fresh, timeout=3) as (mount, big):
        failure = r"/blobs/sha256:[0-9a-f]{64}: no answer within 3s"
        mount.allow_log(failure)
        fresh.range_delay = 4.5
        descriptor = os.open(big, os.O_RDONLY)
        try:
            start = time.monotonic()
            with pytest.raises(OSError) as caught:
                os.pread(descriptor, 4096, 4 << 20)  # one syscall, well inside the file
            took = time.monotonic() - start
        finally:
            os.close(descriptor)
        assert caught.value.errno == errno.EIO
        assert took < 3 + 1.5, took  # one timeout (and a Range in flight), not one per Range
        assert re.search(failure, mount.log())  # says what the deadline cut off


def test_the_cache_stays_within_its_size(
    tmp_path: Path, layered: Layered, fresh: CountingProxy
) -> None:
    cache = tmp_path / "cache"
    mount = Mount(tmp_path / "mnt", "--cache-dir", str(cache), "--cache-size", "64M")
    try:
        rootfs = image_via(mount, fresh) / "rootfs"
        subprocess.run(["tar", "-cf", "/dev/null", "-C", str(rootfs), "."], check=True)
        everything = [path for path in cache.rglob("*") if path.is_file()]
        assert sum(path.stat().st_size for path in everything) <= 64 << 20  # indexes too
        expected = (layered.oracle_rootfs / "regfs-test/big.bin").read_bytes()
        assert (rootfs / "regfs-test/big.bin").read_bytes() == expected
    finally:
        mount.close()


def test_two_mounts_share_one_cache(tmp_path: Path, layered: Layered, fresh: CountingProxy) -> None:
    cache = tmp_path / "cache"
    mounts = [Mount(tmp_path / f"mnt{n}", "--cache-dir", str(cache)) for n in range(2)]
    expected = hashlib.sha256((layered.oracle_rootfs / "regfs-test/big.bin").read_bytes()).digest()
    results: list[bytes] = []
    try:

        def read(mount: Mount) -> None:
            data = (image_via(mount, fresh) / "rootfs/regfs-test/big.bin").read_bytes()
            results.append(hashlib.sha256(data).digest())

        threads = [threading.Thread(target=read, args=(mount,)) for mount in mounts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for mount in mounts:
            mount.close()
    assert results == [expected, expected]


def test_a_killed_daemon_leaves_a_usable_cache(
    tmp_path: Path, layered: Layered, fresh: CountingProxy
) -> None:
    cache = tmp_path / "cache"
    first = Mount(tmp_path / "first", "--cache-dir", str(cache))
    reader = subprocess.Popen(["cat", str(image_via(first, fresh) / "rootfs/etc/issue")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    # killed in the middle of the first pass
    wait_until(lambda: fresh.blob_bytes() >= 20 << 20, 60, "20 MiB of the first pass")
    killed = first.pid()
    os.kill(killed, 9)
    reader.wait(30)
    first.close()  # clears the dead mount
    second = Mount(tmp_path / "second", "--cache-dir", str(cache))
    try:
        rootfs = image_via(second, fresh) / "rootfs"
        assert (rootfs / "etc/issue").read_text() == "regfs layered image\n"
        expected = (layered.oracle_rootfs / "regfs-test/big.bin").read_bytes()
        assert (rootfs / "regfs-test/big.bin").read_bytes() == expected
        # the killed daemon's blob is gone (the second may still index other layers)
        assert [p for p in (cache / "tmp").iterdir() if f".{killed}." in p.name] == []
    finally:
        second.close()


READERS = 16
READS_WANTED = 3000
"""Reads enough for evicted chunks to be fetched again many times over: about 200 Range
requests, 8 s on the test machine."""
RSS_BOUND = 256 << 20
"""The daemon's resident memory that docs/reliability.md states for a mount."""


def daemon_rss(mount: Mount) -> int:
    status = Path(f"/proc/{mount.pid()}/status").read_text()
    return (
        int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])
        << 10
    )


def test_sixteen_concurrent_readers_get_the_right_bytes_from_one_download_each(
    tmp_path: Path, layered: Layered, fresh: CountingProxy
) -> None:
    """16 threads read random ranges of random files of every layer, with a cache smaller
    than the image so chunks are evicted and fetched again meanwhile: every byte is right,
    each layer blob is downloaded whole once, and the daemon stays within its memory."""
    oracle = layered.oracle_rootfs
    files = [p.relative_to(oracle) for p in oracle.rglob("*") if p.is_file() and not p.is_symlink()]
    files += [Path("regfs-test/big.bin")] * len(files)  # the big file: re-fetches
    mount = Mount(tmp_path / "mnt", "--cache-dir", str(tmp_path / "cache"), "--cache-size", "64M")
    rootfs = image_via(mount, fresh) / "rootfs"
    failures: list[str] = []
    reads = [0] * READERS
    peak_rss = 0
    give_up = time.monotonic() + 60

    def reader(number: int) -> None:
        chooser = random.Random(number)
        while sum(reads) < READS_WANTED and time.monotonic() < give_up and not failures:
            name = chooser.choice(files)
            expected = (oracle / name).read_bytes()
            offset = chooser.randrange(max(1, len(expected)))
            size = chooser.choice((4096, 65536, 1 << 20))
            try:
                with open(rootfs / name, "rb") as file:
                    got = os.pread(file.fileno(), size, offset)
            except OSError as error:
                failures.append(f"{name}@{offset}: {error}")
                return
            if got != expected[offset : offset + size]:
                failures.append(f"{name}@{offset}+{size}: wrong bytes")
            reads[number] += 1

    try:
        threads = [threading.Thread(target=reader, args=(n,)) for n in range(READERS)]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            peak_rss = max(peak_rss, daemon_rss(mount))
            time.sleep(0.2)
        assert failures == []
        assert sum(reads) >= READS_WANTED, reads
        assert fresh.range_requests > 0, "no evicted chunk was fetched again"
        digests = layer_digests(layered)
        whole = {path.rsplit("/", 1)[1]: n for path, n in fresh.whole_blob_gets.items()}
        assert set(whole) <= set(digests) and max(whole.values()) == 1, whole
        assert peak_rss < RSS_BOUND, f"peak RSS {peak_rss >> 20} MiB"
    finally:
        mount.close()


BASE_FILE = "0/etc/os-release"
"""A file of the bottom layer, the Debian base (its largest, about 30 MB)."""


def test_a_stopped_download_in_another_mount_is_eio_in_time_and_then_read(
    tmp_path: Path, layered: Layered, fresh: CountingProxy
) -> None:
    """A reader whose layer another process on the same cache dir is downloading waits for
    it, but not forever: with that process stopped (SIGSTOP), the read is EIO within
    ``--timeout``, logged naming that process; once it goes on, the read works."""
    cache = tmp_path / "cache"
    first = Mount(tmp_path / "first", "--cache-dir", str(cache))
    second = Mount(tmp_path / "second", "--cache-dir", str(cache), "--timeout", "3")
    reader = subprocess.Popen(["cat", str(image_via(first, fresh) / BASE_FILE)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    stopped = first.pid()
    expected = (layered.oracle_rootfs / "etc/os-release").read_text()
    try:
        wait_until(lambda: fresh.blob_bytes() >= 8 << 20, 60, "8 MiB of the first pass")
        os.kill(stopped, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(OSError) as raised:
            (image_via(second, fresh) / BASE_FILE).read_text()
        assert raised.value.errno == errno.EIO
        assert time.monotonic() - started < 3 * 3
        os.kill(stopped, signal.SIGCONT)
        assert reader.wait(60) == 0
        assert (image_via(second, fresh) / BASE_FILE).read_text() == expected
    finally:
        os.kill(stopped, signal.SIGCONT)
        first.close()
        second.close()
    stalled = re.compile(rf"WARNING .*@sha256:[0-9a-f]{{64}}: process {stopped} on this cache "
                         r"dir is downloading it, with no progress for \d")  # fmt: skip
    assert stalled.search(second.log()), second.log()
    second.allow_log(stalled.pattern, r"WARNING regfs.fuse: \w+: no answer within 3s")


def test_a_download_in_another_mount_that_keeps_coming_is_waited_for(
    tmp_path: Path, layered: Layered, fresh: CountingProxy
) -> None:
    """Another process's download is this reader's progress: a layer that takes longer
    than ``--timeout`` to arrive in the mount that downloads it is read, not EIO, by the
    other mount waiting for it."""
    fresh.trickle_rate = 6 << 20  # the layer takes about 5 s
    fresh.faults = [(layer_digests(layered)[0].split(":")[1], "trickle")]
    cache = tmp_path / "cache"
    first = Mount(tmp_path / "first", "--cache-dir", str(cache))
    second = Mount(tmp_path / "second", "--cache-dir", str(cache), "--timeout", "2")
    reader = subprocess.Popen(["cat", str(image_via(first, fresh) / BASE_FILE)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_until(lambda: fresh.blob_bytes() >= 4 << 20, 60, "4 MiB of the first pass")
        started = time.monotonic()
        text = (image_via(second, fresh) / BASE_FILE).read_text()
        assert text == (layered.oracle_rootfs / "etc/os-release").read_text()
        assert time.monotonic() - started > 2  # it did wait longer than its --timeout
        assert reader.wait(60) == 0
    finally:
        fresh.trickle_rate = 2.0
        first.close()
        second.close()
