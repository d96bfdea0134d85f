"""Reading a cold file through a TOC layer on a link far away: round trips are the cost,
so adjacent chunks go in one Range request, a sequential reader is read ahead of, and
requests that can go together go in parallel; every byte is still the image's, and a
fault mid-stream is still a clean EIO in time."""

from __future__ import annotations

import errno
import json
import os
import random
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from regfs.layers.pieces import FAILURE_MEMORY
from regfs.layers.walks import WALK_FILES
from tests.mount.conftest import Layered, Pushed
from tests.support import images
from tests.support.estargz import EstargzConverter
from tests.support.mount import Mount
from tests.support.net import wait_until
from tests.support.proxy import CountingProxy

pytestmark = pytest.mark.mount

MiB = 1 << 20
BIG = os.urandom(24 * MiB)
SMALL = {f"lib/m{n:02}.py": os.urandom(random.randrange(2000, 40000)) for n in range(24)}
FILES = {"big.bin": BIG, **SMALL}
TIMEOUT = 2


@dataclass(frozen=True)
class Lazy:
    proxy: CountingProxy
    repository: str
    layer_digest: str

    def rootfs(self, mount: Mount) -> Path:
        return mount / self.proxy.host / self.repository / "1/rootfs"

    def range_requests(self) -> int:
        return self.proxy.requests_by_path[f"/v2/{self.repository}/blobs/{self.layer_digest}"]


@pytest.fixture(scope="module")
def proxy(pushed: Pushed) -> Iterator[CountingProxy]:
    counting = CountingProxy(pushed.registry.port)
    yield counting
    counting.stop()


@pytest.fixture(scope="module", params=["zstd:chunked", "estargz"])
def lazy(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    pushed: Pushed,
    proxy: CountingProxy,
    estargz: EstargzConverter,
) -> Lazy:
    """The files as one layer with a TOC: zstd:chunked as skopeo writes it (chunks of
    ~64 KiB), eStargz with 64 KiB chunks."""
    work = tmp_path_factory.mktemp("read-path")
    images.build_image(work / "oci", "files", FILES)
    repository = "read-path/" + request.param.replace(":", "-")
    destination = f"{pushed.registry.host}/{repository}:1"
    if request.param == "estargz":
        estargz.push(work / "oci", "files", destination, "--estargz-chunk-size", "65536")
    else:
        images.push(work / "oci", "files", destination, "--dest-compress-format", "zstd:chunked")
    body, _, _ = images.get_manifest(pushed.registry.url, repository, "1")
    (layer,) = json.loads(body)["layers"]
    return Lazy(proxy, repository, layer["digest"])


@pytest.fixture
def mount(tmp_path: Path, lazy: Lazy) -> Iterator[Mount]:
    lazy.proxy.reset()
    lazy.proxy.range_delay = 0
    lazy.proxy.faults = []
    mounted = Mount(tmp_path / "mnt", "--timeout", str(TIMEOUT))
    yield mounted
    mounted.close()
    lazy.proxy.range_delay = 0


def read_all(path: Path, each: Callable[[bytes], None] = lambda data: None) -> bytes:
    parts = []
    with open(path, "rb") as file:
        while data := file.read(MiB):
            each(data)
            parts.append(data)
    return b"".join(parts)


def test_a_cold_sequential_read_costs_few_round_trips(mount: Mount, lazy: Lazy) -> None:
    """Before: one Range request per chunk, one after another (384 for this file)."""
    rootfs = lazy.rootfs(mount)
    os.listdir(rootfs)  # the TOC
    lazy.proxy.reset()
    lazy.proxy.range_delay = 0.02  # a round trip of a link far away
    assert read_all(rootfs / "big.bin") == BIG
    assert lazy.range_requests() <= 24, lazy.range_requests()  # ~4 MiB a request


def test_small_files_read_one_after_another_come_a_few_to_a_request(
    mount: Mount, lazy: Lazy
) -> None:
    """A program starting reads file after file, most of them laid out side by side: the
    chunks after a miss come in its request, so the next files are there when asked for.
    Before: one Range request per file (24). Each file read is still the image's."""
    rootfs = lazy.rootfs(mount)
    os.listdir(rootfs)  # the TOC
    lazy.proxy.reset()
    for name, data in sorted(SMALL.items()):
        assert (rootfs / name).read_bytes() == data, name
    assert lazy.range_requests() <= 8, lazy.range_requests()
    assert lazy.proxy.blob_bytes(lazy.layer_digest) < sum(map(len, SMALL.values())) + 2 * MiB


def test_parallel_readers_get_the_image_s_bytes(mount: Mount, lazy: Lazy) -> None:
    """Readers at random offsets of the big file and of small ones, at once, while others
    read sequentially (and are read ahead of): every byte is the file's."""
    rootfs = lazy.rootfs(mount)
    lazy.proxy.range_delay = 0.005
    randomly = random.Random(21)
    jobs = [(name, randomly.randrange(len(data) or 1), randomly.randrange(1, 3 * MiB))
            for name, data in randomly.choices(list(FILES.items()), k=64)]  # fmt: skip

    def pread(job: tuple[str, int, int]) -> bool:
        name, offset, size = job
        with open(rootfs / name, "rb") as file:
            return os.pread(file.fileno(), size, offset) == FILES[name][offset : offset + size]

    def sequential(name: str) -> bool:
        return read_all(rootfs / name) == FILES[name]

    with ThreadPoolExecutor(8) as pool:
        whole = [pool.submit(sequential, name) for name in ("big.bin", *list(SMALL)[:4])]
        assert all(pool.map(pread, jobs))
        assert all(future.result() for future in whole)


def test_a_fault_mid_stream_is_eio_in_time_and_never_a_bad_byte(mount: Mount, lazy: Lazy) -> None:
    """A sequential read whose Range requests (its own and those read ahead of it) stall
    from the third MiB on: each read syscall ends within ``--timeout``, EIO when it
    cannot have its bytes; what was read is the file's; once the registry answers again,
    the file reads whole."""
    rootfs = lazy.rootfs(mount)
    os.listdir(rootfs)
    lazy.proxy.stall_seconds = 2 * TIMEOUT
    mount.allow_log(r"no answer within", r"read-ahead of .* stopped")
    read = bytearray()
    longest = 0.0
    with open(rootfs / "big.bin", "rb") as file, pytest.raises(OSError) as caught:
        while True:
            if len(read) == 2 * MiB:
                lazy.proxy.faults = [("/blobs/", "stall")] * 200
            start = time.monotonic()
            data = file.read(128 << 10)
            longest = max(longest, time.monotonic() - start)
            assert data, "read to the end through a stalled registry"
            read += data
    assert caught.value.errno == errno.EIO
    assert bytes(read) == BIG[: len(read)]
    assert longest < TIMEOUT + 1.5, longest
    lazy.proxy.faults = []
    time.sleep(lazy.proxy.stall_seconds)  # the stalled handlers end
    assert read_all(rootfs / "big.bin") == BIG


def test_damaged_answers_mid_stream_are_never_served(mount: Mount, lazy: Lazy) -> None:
    """Range answers corrupted or cut short while a sequential reader is read ahead of:
    the reader gets the file's bytes (each damaged piece fetched once more) or EIO."""
    rootfs = lazy.rootfs(mount)
    os.listdir(rootfs)
    mount.allow_log(r"read-ahead of .* stopped", r"read: .*chunk at \d+")
    lazy.proxy.faults = [("/blobs/", "corrupt"), ("/blobs/", "truncate")] * 3
    try:
        assert read_all(rootfs / "big.bin") == BIG
    except OSError as error:  # a piece damaged twice
        assert error.errno == errno.EIO
    lazy.proxy.faults = []
    time.sleep(FAILURE_MEMORY)  # the kernel's retry of a failed read is answered at once
    assert read_all(rootfs / "big.bin") == BIG


def test_background_fetch_brings_the_rest_of_a_layer_once_it_is_read(
    tmp_path: Path, lazy: Lazy
) -> None:
    """With ``--background-fetch``, reading one file of a lazy layer fetches the rest of the
    layer behind it: the other files then cost no request. Without, each costs its own."""
    lazy.proxy.reset()
    mount = Mount(tmp_path / "mnt", "--background-fetch")
    try:
        rootfs = lazy.rootfs(mount)
        first, *others = SMALL
        assert (rootfs / first).read_bytes() == SMALL[first]
        wait_until(lambda: "fetched whole in the background" in mount.log(), 60, "the fetch")
        lazy.proxy.reset()
        assert all((rootfs / name).read_bytes() == SMALL[name] for name in others)
        assert read_all(rootfs / "big.bin") == BIG
        assert lazy.range_requests() == 0
    finally:
        mount.close()


def test_a_program_walking_a_lazy_layer_gets_its_rest_fetched_at_once(
    tmp_path: Path, pushed: Pushed, proxy: CountingProxy
) -> None:
    """A few hundred files read stay lazy (an application's start); a program reading every
    file of a zstd:chunked layer (tar, a scanner) has the rest fetched behind it once it has
    read ``WALK_FILES`` of them, instead of one round trip per file to the end."""
    files = {f"tree/{n // 100}/f{n:04}": os.urandom(1500) for n in range(WALK_FILES + 400)}
    images.build_image(tmp_path / "oci", "walk", files)
    images.push(tmp_path / "oci", "walk", f"{pushed.registry.host}/read-path/walk:1",
                "--dest-compress-format", "zstd:chunked")  # fmt: skip
    proxy.reset()
    mount = Mount(tmp_path / "mnt")
    try:
        rootfs = mount / proxy.host / "read-path/walk/1/rootfs"
        names = sorted(files)
        assert all((rootfs / name).read_bytes() == files[name] for name in names[:100])
        assert "fetching the rest" not in mount.log()
        assert all((rootfs / name).read_bytes() == files[name] for name in names[100:])
        assert "files read: fetching the rest" in mount.log()
        (layer,) = json.loads(images.get_manifest(pushed.registry.url, "read-path/walk", "1")[0])[
            "layers"
        ]
        requests = proxy.requests_by_path[f"/v2/read-path/walk/blobs/{layer['digest']}"]
        assert requests < WALK_FILES + 100, requests  # not one per file
    finally:
        mount.close()


def test_a_file_of_a_gzip_image_waits_only_for_the_layers_above_it(
    tmp_path: Path, layered: Layered, layered_proxy: CountingProxy
) -> None:
    """The layered image's bottom layer (the Debian base) takes 4 s to start arriving:
    ``etc/issue``, which layer 1 gives, is read without waiting for it (the lookup goes
    down from the top and stops at the layer that has the name); the rest is indexed in
    the background, and a listing then shows the whole merge. Before, every lookup in
    ``rootfs/`` waited for every layer."""
    proxy = layered_proxy
    proxy.reset()
    body, _, _ = images.get_manifest(layered.registry.url, "layered/oci", "1")
    bottom = json.loads(body)["layers"][0]["digest"]
    proxy.slow = [(bottom, 4.0)]
    mount = Mount(tmp_path / "mnt")
    try:
        rootfs = mount / proxy.host / "layered/oci/1/rootfs"
        start = time.monotonic()
        assert (rootfs / "etc/issue").read_text() == "regfs layered image\n"
        took = time.monotonic() - start
        assert took < 3.5, took
        assert sorted(os.listdir(rootfs)) == sorted(os.listdir(layered.oracle_rootfs))
        assert sorted(os.listdir(rootfs / "etc")) == sorted(
            os.listdir(layered.oracle_rootfs / "etc")
        )
    finally:
        proxy.slow = []
        mount.close()
