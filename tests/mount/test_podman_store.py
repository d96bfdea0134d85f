"""Debian's podman on a ``regfs mount --layer-store``: containers run from layers served
lazily (gzip, eStargz, zstd:chunked, SOCI v2), their output the same as after podman's own
pull; podman falls back to its own pull where the store cannot serve (refused, schema1),
and a registry gone mid-run is an error in the container, not a hang.

Each podman has storage of its own (``--root``/``--runroot`` in the test's tmp dir), so
it is given the store by ``--storage-opt`` (podman 4.3 drops storage.conf's store when
``--root`` is given), and a registries.conf of its own that lets it use http on loopback.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import mmap
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from regfs.registry.host_stats import SILENT_PROBE
from tests.mount.conftest import BASIC_USER
from tests.support import images, soci
from tests.support.estargz import EstargzConverter
from tests.support.mount import Mount, run_regfs
from tests.support.net import wait_until
from tests.support.podman import Podman
from tests.support.programs import build_program_image
from tests.support.proxy import CountingProxy
from tests.support.registry import Registry

pytestmark = pytest.mark.mount

FORMATS = ("gzip", "estargz", "zstd:chunked", "soci")
COMMAND = ("/usr/bin/sha256sum", "/etc/os-release", "/data/new", "/data/gone")
"""Reads two files (one per layer) and a whited-out one: exit status 1, and no read of
``/data/big``, so a lazy layer costs its TOC and a few chunks."""


@dataclass(frozen=True)
class StoreImages:
    registry: Registry
    proxy: CountingProxy
    layers: dict[str, list[tuple[str, int]]]
    """(digest, compressed size) of each layer, bottom first, by format."""

    def reference(self, image_format: str, host: str | None = None) -> str:
        return f"{host or self.proxy.host}/store/{image_format.replace(':', '-')}:1"

    def layer_bytes(self, image_format: str, position: int | None = None) -> int:
        """Layer blob bytes the proxy served for the image (of one layer, or all; configs
        and indexes left out)."""
        layers = self.layers[image_format]
        chosen = layers if position is None else layers[position : position + 1]
        return sum(self.proxy.blob_bytes(digest) for digest, _ in chosen)

    def whole_layer_gets(self, image_format: str) -> int:
        digests = {digest for digest, _ in self.layers[image_format]}
        return sum(count for path, count in self.proxy.whole_blob_gets.items()
                   if path.rsplit("/", 1)[-1] in digests)  # fmt: skip


def _push_soci(registry: Registry, layout: Path, tag: str, destination: str) -> None:
    """The image pushed as gzip (``…:plain``), given a SOCI index by ``regfs index push``
    (1 MiB spans, every layer), then named by a v2 index as ``destination``."""
    repository, _, name = destination.partition("/")[2].partition(":")
    images.push(layout, tag, f"{registry.host}/{repository}:plain")
    made = run_regfs("index", "push", "--span-size", "1M", "--min-layer-size", "0",
                     f"{registry.host}/{repository}:plain", timeout=120)  # fmt: skip
    assert made.returncode == 0, made.stderr
    manifest, _, _ = images.get_manifest(registry.url, repository, "plain")
    soci.push_v2(registry.url, repository, manifest, name)


@pytest.fixture(scope="module")
def store_images(
    tmp_path_factory: pytest.TempPathFactory, estargz: EstargzConverter
) -> Iterator[StoreImages]:
    """The program image (tests/support/programs.py) as gzip, eStargz, zstd:chunked and
    schema1 (whose layers are gzip's), and built once more for a SOCI-indexed gzip image
    (its layers shared with no other); behind a counting proxy. zstd:chunked is pushed
    first, so that skopeo cannot reuse the gzip blobs for it."""
    work = tmp_path_factory.mktemp("podman-images")
    build_program_image(work / "oci", "1")
    build_program_image(work / "oci", "soci")
    registry = Registry(work / "registry")
    proxy = CountingProxy(registry.port)
    data = StoreImages(registry, proxy, {})
    images.push(work / "oci", "1", data.reference("zstd:chunked", registry.host),
                "--dest-compress-format", "zstd:chunked")  # fmt: skip
    estargz.push(work / "oci", "1", data.reference("estargz", registry.host))
    images.push(work / "oci", "1", data.reference("gzip", registry.host))
    images.push(work / "oci", "1", data.reference("schema1", registry.host), "--format", "v2s1")
    _push_soci(registry, work / "oci", "soci", data.reference("soci", registry.host))
    for image_format in FORMATS:
        repository = data.reference(image_format).split("/", 1)[1].split(":")[0]
        manifest = json.loads(images.get_manifest(registry.url, repository, "1")[0])
        if image_format == "zstd:chunked":
            assert all("zstd" in layer["mediaType"] for layer in manifest["layers"])
        data.layers[image_format] = [(layer["digest"], layer["size"])
                                     for layer in manifest["layers"]]  # fmt: skip
    yield data
    proxy.stop()
    registry.stop()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    mount = Mount(tmp_path_factory.mktemp("layer-store") / "store", "--layer-store",
                  "--timeout", "5")  # fmt: skip
    yield mount
    mount.close()


NewPodman = Callable[..., Podman]
"""``new_podman(store, *hosts)``: a podman of the test's own, on the store (or None), that
may use http to ``hosts``."""


@pytest.fixture
def new_podman(tmp_path: Path) -> Iterator[NewPodman]:
    made: list[Podman] = []

    def make(store: Mount | None, *hosts: str) -> Podman:
        path = store.path if store is not None else None
        made.append(Podman(tmp_path / f"podman{len(made)}", path, list(hosts)))
        return made[-1]

    yield make
    for podman in made:
        podman.close()


@pytest.fixture(scope="module")
def plain(
    tmp_path_factory: pytest.TempPathFactory, store_images: StoreImages
) -> Iterator[tuple[Podman, dict[str, subprocess.CompletedProcess[str]]]]:
    """podman without the store, and what ``COMMAND`` gave after its own pull of each
    image: the oracle of the module."""
    podman = Podman(tmp_path_factory.mktemp("plain-podman"), None, [store_images.proxy.host])
    results = {}
    for image_format in FORMATS:
        results[image_format] = podman.run(store_images.reference(image_format), *COMMAND)
    yield podman, results
    podman.close()


def _program_errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    """What the container's program wrote to stderr (podman's pull progress left out:
    it differs between a pull and the store)."""
    return [line for line in result.stderr.splitlines() if line.startswith("/usr/bin/")]


def _status(store: Mount) -> dict[str, Any]:
    return json.loads(run_regfs("status", "--json", str(store.path)).stdout)  # type: ignore[no-any-return]


def _uses(store: Mount, reference: str) -> int:
    in_use = _status(store)["layer_store"]["layers_in_use"]
    return sum(layer["uses"] for layer in in_use if layer["reference"] == reference)


WHOLE_TARS = ("gzip", "soci")
"""Formats whose index knows the layer's tar length: the first pass or the zTOC measured it.
A TOC lists files only; its index's size is theirs, a little under the tar's."""


def _same_layer_records(
    lazy: Podman, plain: Podman, reference: str, layers: list[tuple[str, int]], image_format: str
) -> None:
    """podman's record of each layer the store gave it (from ``info``) names the layer's
    blob, its size and compression, and the size of the tar podman's own pull measured
    (the plain podman may have pulled that diff in another format: it is the same tar)."""
    compression = 4 if image_format == "zstd:chunked" else 2  # containers/storage's numbers
    own = plain.layer_records()
    for diff_digest, (digest, size) in zip(lazy.layers(reference), layers, strict=True):
        mine = lazy.layer_records()[diff_digest]
        assert (mine["compressed-diff-digest"], mine["compressed-size"]) == (digest, size)
        assert mine["compression"] == compression
        tar_size = int(own[diff_digest]["diff-size"])  # type: ignore[call-overload]
        if image_format in WHOLE_TARS:
            assert mine["diff-size"] == tar_size
        else:
            assert 0.99 * tar_size <= int(mine["diff-size"]) <= tar_size  # type: ignore[call-overload]


@pytest.mark.parametrize("image_format", FORMATS)
def test_a_container_runs_through_the_store_as_after_a_plain_pull(
    new_podman: NewPodman, store: Mount, store_images: StoreImages,
    plain: tuple[Podman, dict[str, subprocess.CompletedProcess[str]]], image_format: str,
) -> None:  # fmt: skip
    """The same output, the same layers (diff_ids) in ``podman image inspect`` and their
    records as podman's own pull makes them, both layers from the store; a lazy format
    fetches its TOC (or zTOC) and the chunks read, never ``/data/big``'s layer whole;
    ``regfs status`` shows the layers in use."""
    proxy = store_images.proxy
    reference = store_images.reference(image_format)
    plain_podman, results = plain
    expected = results[image_format]
    assert expected.returncode == 1 and "/data/gone" in expected.stderr, expected.stderr
    lazy = new_podman(store, proxy.host)
    proxy.reset()
    started = time.monotonic()
    got = lazy.run(reference, *COMMAND)
    seconds = time.monotonic() - started
    fetched = store_images.layer_bytes(image_format)
    print(f"{image_format}: through the store {seconds:.2f} s, {fetched} layer bytes of "
          f"{sum(size for _, size in store_images.layers[image_format])}")  # fmt: skip
    assert (got.returncode, got.stdout) == (1, expected.stdout), got.stderr
    assert _program_errors(got) == _program_errors(expected) != []
    assert lazy.store_layers() == 2, "podman took both layers from the store"
    assert lazy.layers(reference) == plain_podman.layers(reference)
    layers = store_images.layers[image_format]
    _same_layer_records(lazy, plain_podman, reference, layers, image_format)
    if image_format != "gzip":  # the big file's layer: its index and a chunk or span
        (_, big_layer_size), _ = store_images.layers[image_format]
        assert store_images.layer_bytes(image_format, 0) < big_layer_size / 2
        assert store_images.whole_layer_gets(image_format) == 0
    assert _uses(store, reference) == 2, "one use per layer while the image is pulled"


def test_no_open_for_writing_reaches_a_layer_s_files(
    store: Mount, store_images: StoreImages
) -> None:
    """The store mount is not ``ro`` (podman's ``use`` and ``rmdir`` must reach the
    daemon): an open for writing is refused by the daemon itself, or a shared writable
    mapping would change the pages every other reader of the file sees."""
    reference = base64.b64encode(store_images.reference("gzip").encode()).decode()
    digest, _ = store_images.layers["gzip"][0]
    os_release = store / reference / digest / "diff/etc/os-release"
    before = os_release.read_bytes()
    for flags in (os.O_RDWR, os.O_WRONLY, os.O_RDONLY | os.O_TRUNC):
        with pytest.raises(OSError) as caught:
            os.close(os.open(os_release, flags))
        assert caught.value.errno == errno.EROFS, flags
    descriptor = os.open(os_release, os.O_RDONLY)
    try:
        with pytest.raises(OSError):  # a read-only descriptor maps for reading alone
            mmap.mmap(descriptor, 0, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(descriptor)
    assert os_release.read_bytes() == before


def test_rmi_releases_the_layers_and_a_second_run_works(
    new_podman: NewPodman, store: Mount, store_images: StoreImages
) -> None:
    reference = store_images.reference("gzip")
    podman = new_podman(store, store_images.proxy.host)
    first = podman.run(reference, *COMMAND)
    assert first.returncode == 1 and first.stdout.count("\n") == 2, first.stderr
    before = _uses(store, reference)
    podman("rmi", reference)
    assert _uses(store, reference) == before - 2, "one release per layer"
    assert podman.store_layers() == 0
    second = podman.run(reference, *COMMAND)
    assert (second.returncode, second.stdout) == (1, first.stdout)
    assert _uses(store, reference) == before
    shown = run_regfs("status", str(store.path)).stdout
    assert f"{reference} {store_images.layers['gzip'][0][0]} (" in shown, shown


def test_an_image_the_store_refuses_is_pulled_by_podman_itself(
    new_podman: NewPodman, store: Mount, basic_registry: Registry
) -> None:
    """The store has no credentials for this registry (401 → EACCES, at once): podman,
    which has them, pulls the layers itself; the store logs the refusal once."""
    store.allow_log(r"WARNING .*lookup: .*(401|refused|denied)")
    podman = new_podman(store, basic_registry.host)
    reference = f"{basic_registry.host}/solo:1"
    started = time.monotonic()
    credentials = f"{BASIC_USER.username}:{BASIC_USER.password}"
    podman("pull", "--creds", credentials, reference)
    assert time.monotonic() - started < 30
    assert podman.store_layers() == 0
    assert len(podman.layers(reference)) == 1


def test_an_image_the_store_does_not_serve_is_pulled_by_podman_itself(
    new_podman: NewPodman, store: Mount, store_images: StoreImages,
    plain: tuple[Podman, dict[str, subprocess.CompletedProcess[str]]],
) -> None:  # fmt: skip
    """A schema1 image (no diff_ids for ``info``): its layers are missing from the store
    (ENOENT, quietly), so podman pulls them and the container runs as from gzip's."""
    reference = store_images.reference("schema1")
    podman = new_podman(store, store_images.proxy.host)
    started = time.monotonic()
    result = podman.run(reference, *COMMAND)
    assert time.monotonic() - started < 30
    assert (result.returncode, result.stdout) == (1, plain[1]["gzip"].stdout), result.stderr
    assert podman.store_layers() == 0
    assert _uses(store, reference) == 0


def test_a_registry_that_answers_nothing_costs_one_timeout_not_one_per_layer(
    store: Mount,
) -> None:
    """podman looks an image's layers up one after another: against a registry that takes
    connections and never answers, the first lookup fails within the store's timeout (5 s)
    and those right after it in ``SILENT_PROBE`` (2 s), so podman goes on to its own pull
    without waiting a timeout per layer."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        host = f"127.0.0.1:{server.getsockname()[1]}"
        store.allow_log(rf"{host}: /v2/app/manifests/1: no answer within",
                        rf"{host} answered nothing in \S+s, nor in")  # fmt: skip
        reference = base64.b64encode(f"{host}/app:1".encode()).decode()
        took = []
        for layer in "abc":
            started = time.monotonic()
            with pytest.raises(OSError) as raised:
                os.stat(store / reference / f"sha256:{layer * 64}" / "diff")
            took.append(time.monotonic() - started)
            assert raised.value.errno == errno.EIO
    assert 4.5 < took[0] < 8 and max(took[1:]) < SILENT_PROBE + 1, took


def _reading_stdin(pid: int) -> bool:
    """Whether process ``pid`` waits in a read(2) of its stdin (``/proc/PID/syscall``)."""
    try:
        return Path(f"/proc/{pid}/syscall").read_text().split()[:2] == ["0", "0x0"]
    except (FileNotFoundError, ProcessLookupError):
        return False


def _container_pid(podman: Podman, name: str) -> int:
    found = podman("inspect", "--format", "{{.State.Pid}}", name, check=False)
    return int(found.stdout.strip() or 0) if found.returncode == 0 else 0


EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_a_registry_gone_mid_run_is_a_clean_error_not_a_hang(
    new_podman: NewPodman, store: Mount, store_images: StoreImages
) -> None:
    """An eStargz image pulled through the store (its TOCs only). The container reads
    ``/etc/os-release``, then its stdin, then ``/data/big``; while it waits on stdin the
    registry goes away: the big file is EIO in the container within the store's timeout,
    and what was read is still the image's."""
    store.allow_log(r"WARNING regfs.fuse: read: GET \S+/blobs/\S+: .*(disconnected|refused|reset)")
    gone = CountingProxy(store_images.registry.port)
    try:
        reference = store_images.reference("estargz", gone.host)
        podman = new_podman(store, gone.host)
        name = "mid-run"
        command = ("/usr/bin/sha256sum", "/etc/os-release", "-", "/data/big")
        running = podman.popen("run", "-i", "--name", name, *Podman.run_options(), reference,
                               *command)  # fmt: skip
        try:
            wait_until(lambda: _reading_stdin(_container_pid(podman, name)), 60,
                       "the container reading its stdin")  # fmt: skip
            gone.gone = True
            started = time.monotonic()
            stdout, stderr = running.communicate("", timeout=60)
        finally:
            running.kill()
        assert time.monotonic() - started < 30
        assert running.returncode == 1
        os_release = hashlib.sha256(Path("/etc/os-release").read_bytes()).hexdigest()
        assert stdout == f"{os_release}  /etc/os-release\n{EMPTY_SHA256}  -\n", stderr
        assert "/data/big: Input/output error" in stderr, stderr
    finally:
        gone.stop()


def test_a_prefetched_image_starts_with_no_fetch(
    tmp_path: Path, new_podman: NewPodman, store_images: StoreImages
) -> None:
    """``regfs prefetch`` into the store's cache dir: podman's pull and run through the
    store then fetch no blob byte (the registry is asked only whether it has them)."""
    proxy = store_images.proxy
    reference = store_images.reference("gzip")
    cache = tmp_path / "cache"
    done = run_regfs("prefetch", "-q", "--cache-dir", str(cache), reference)
    assert done.returncode == 0, done.stderr
    store = Mount(tmp_path / "store", "--layer-store", "--cache-dir", str(cache))
    try:
        podman = new_podman(store, proxy.host)
        proxy.reset()
        result = podman.run(reference, *COMMAND)
        assert result.returncode == 1 and result.stdout.count("\n") == 2, result.stderr
        assert store_images.layer_bytes("gzip") == 0
        podman.close()  # before its store goes
    finally:
        store.close()


def test_an_image_pulled_through_the_store_runs_after_its_tag_moved(
    tmp_path: Path, new_podman: NewPodman, store_images: StoreImages
) -> None:
    """podman's record of a store layer is a link to ``STORE/<ref>/<digest>/diff``, which
    it follows at every container start: once the tag names another image (after the
    store's metadata TTL), the image pulled before still runs, as after podman's own pull,
    and after the store is mounted again too (not while it is not mounted: podman's
    error, which docs/configuration.md quotes)."""
    registry = store_images.registry
    build_program_image(tmp_path / "oci", "before")
    build_program_image(tmp_path / "oci", "after")
    reference = f"{registry.host}/store/moving:1"
    images.push(tmp_path / "oci", "before", reference)
    cache = tmp_path / "cache"
    options = ("--layer-store", "--cache-dir", str(cache), "--metadata-ttl", "1")
    store = Mount(tmp_path / "store", *options)
    try:
        podman = new_podman(store, registry.host)
        podman("pull", reference)
        assert podman.store_layers() == 2
        image_id = podman("image", "inspect", "--format", "{{.Id}}", reference).stdout.strip()
        images.push(tmp_path / "oci", "after", reference)
        time.sleep(1.5)
        first = podman.run(image_id, "/usr/bin/cat", "/data/new")
        assert (first.returncode, first.stdout) == (0, "added by the second layer of before\n"), (
            first.stderr
        )
        store.close()
        unmounted = podman.run(image_id, "/usr/bin/cat", "/data/new")  # podman's own answer
        assert unmounted.returncode != 0 and "/diff: no such file" in unmounted.stderr
        store = Mount(tmp_path / "store", *options)
        again = podman.run(image_id, "/usr/bin/cat", "/data/new")
        assert (again.returncode, again.stdout) == (0, first.stdout), again.stderr
        podman.close()  # before its store goes
    finally:
        store.close()
