"""Debian's podman on a ``regfs mount --layer-store``: containers run from layers served
lazily, their output the same as after podman's own pull; podman falls back to its own
pull where the store cannot serve, and a registry gone mid-run is an error, not a hang.

Each podman has storage of its own (``--root``/``--runroot`` in the test's tmp dir), so
it is given the store by ``--storage-opt`` (podman 4.3 drops storage.conf's store when
``--root`` is given), and a registries.conf of its own that lets it use http on loopback.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.mount.conftest import BASIC_USER
from tests.support import images
from tests.support.estargz import EstargzConverter
from tests.support.mount import Mount, run_regfs
from tests.support.programs import build_program_image
from tests.support.proxy import CountingProxy
from tests.support.registry import Registry

pytestmark = pytest.mark.mount

FORMATS = ("gzip", "estargz", "zstd:chunked")
COMMAND = ("/usr/bin/sha256sum", "/etc/os-release", "/data/new", "/data/gone")
"""Reads two files (one per layer) and a whited-out one: exit status 1, and no read of
``/data/big``, so a lazy layer costs its TOC and a few chunks."""
PODMAN_TIMEOUT = 120


def _ulimits() -> list[str]:
    """podman raises a container's NOFILE and NPROC for root by default, which runc cannot
    do without CAP_SYS_RESOURCE (CI sandboxes, containers): none above the shell's."""
    options = []
    for name, which in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        soft, _ = resource.getrlimit(which)
        limit = 1024 if soft == resource.RLIM_INFINITY else min(soft, 1024)
        options += ["--ulimit", f"{name}={limit}:{limit}"]
    return options


@dataclass(frozen=True)
class StoreImages:
    registry: Registry
    proxy: CountingProxy
    layers: dict[str, dict[str, int]]
    """Compressed size of each layer, by digest, by format."""

    def reference(self, image_format: str, host: str | None = None) -> str:
        return f"{host or self.proxy.host}/store/{image_format.replace(':', '-')}:1"

    def layer_bytes(self, image_format: str) -> int:
        """Layer blob bytes the proxy served for the image (configs left out)."""
        return sum(self.proxy.blob_bytes(digest) for digest in self.layers[image_format])

    def whole_layer_gets(self, image_format: str) -> int:
        return sum(count for path, count in self.proxy.whole_blob_gets.items()
                   if path.rsplit("/", 1)[-1] in self.layers[image_format])  # fmt: skip


@pytest.fixture(scope="module")
def store_images(
    tmp_path_factory: pytest.TempPathFactory, estargz: EstargzConverter
) -> Iterator[StoreImages]:
    """The program image (tests/support/programs.py) as gzip, eStargz and zstd:chunked,
    behind a counting proxy; zstd:chunked is pushed first, so that skopeo cannot reuse
    the gzip blobs for it."""
    work = tmp_path_factory.mktemp("podman-images")
    build_program_image(work / "oci", "1")
    registry = Registry(work / "registry")
    proxy = CountingProxy(registry.port)
    data = StoreImages(registry, proxy, {})
    images.push(work / "oci", "1", data.reference("zstd:chunked", registry.host),
                "--dest-compress-format", "zstd:chunked")  # fmt: skip
    estargz.push(work / "oci", "1", data.reference("estargz", registry.host))
    images.push(work / "oci", "1", data.reference("gzip", registry.host))
    for image_format in FORMATS:
        repository = data.reference(image_format).split("/", 1)[1].split(":")[0]
        manifest = json.loads(images.get_manifest(registry.url, repository, "1")[0])
        if image_format == "zstd:chunked":
            assert all("zstd" in layer["mediaType"] for layer in manifest["layers"])
        data.layers[image_format] = {layer["digest"]: layer["size"] for layer in manifest["layers"]}
    yield data
    proxy.stop()
    registry.stop()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    mount = Mount(tmp_path_factory.mktemp("layer-store") / "store", "--layer-store",
                  "--timeout", "5")  # fmt: skip
    yield mount
    mount.close()


class Podman:
    """podman with storage of its own below ``directory``; with the layer store or not."""

    def __init__(self, directory: Path, store: Path | None, insecure: list[str]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.root = directory / "root"
        self.run_root = Path(tempfile.mkdtemp(prefix="podman-run-"))  # podman: ≤ 50 characters
        conf = directory / "registries.conf"
        conf.write_text("".join(f'[[registry]]\nlocation = "{host}"\ninsecure = true\n'
                                for host in insecure))  # fmt: skip
        storage = directory / "storage.conf"  # not the host's; podman 4.3 wants both roots
        storage.write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{self.root}"\n'
                           f'runroot = "{self.run_root}"\n')  # fmt: skip
        self.environment = {"CONTAINERS_REGISTRIES_CONF": str(conf),
                            "CONTAINERS_STORAGE_CONF": str(storage)}  # fmt: skip
        self.options = ["--root", str(self.root), "--runroot", str(self.run_root),
                        "--storage-driver", "overlay"]  # fmt: skip
        if store is not None:
            self.options += ["--storage-opt", f"overlay.additionallayerstore={store}:ref"]

    def __call__(self, *arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["podman", *self.options, *arguments], capture_output=True, text=True,
            env=os.environ | self.environment, timeout=PODMAN_TIMEOUT, check=False,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"podman {' '.join(arguments)}: {result.stderr}")
        return result

    def run(self, image: str, *command: str) -> subprocess.CompletedProcess[str]:
        return self("run", "--rm", "--network", "none", *_ulimits(), image, *command,
                    check=False)  # fmt: skip

    def layers(self, image: str) -> list[str]:
        return json.loads(self("image", "inspect", "--format", "{{json .RootFS.Layers}}",
                               image).stdout)  # fmt: skip

    def store_layers(self) -> int:
        """Layers of podman's storage that are the store's (CreateAs marks them)."""
        return len(list((self.root / "overlay").glob("*/additionallayer")))

    def close(self) -> None:
        self("rm", "--all", "--force", check=False)
        self("rmi", "--all", "--force", check=False)
        shutil.rmtree(self.run_root, ignore_errors=True)


@pytest.fixture
def podmans(tmp_path: Path) -> Iterator[list[Podman]]:
    made: list[Podman] = []
    yield made
    for podman in made:
        podman.close()


def _podman(podmans: list[Podman], directory: Path, store: Mount | None, *hosts: str) -> Podman:
    podman = Podman(directory, store.path if store is not None else None, list(hosts))
    podmans.append(podman)
    return podman


def _program_errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    """What the container's program wrote to stderr (podman's pull progress left out:
    it differs between a pull and the store)."""
    return [line for line in result.stderr.splitlines() if line.startswith("/usr/bin/")]


def _status(store: Mount) -> dict[str, object]:
    return json.loads(run_regfs("status", "--json", str(store.path)).stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("image_format", FORMATS)
def test_a_container_runs_through_the_store_as_after_a_plain_pull(
    tmp_path: Path, podmans: list[Podman], store: Mount, store_images: StoreImages,
    image_format: str,
) -> None:  # fmt: skip
    proxy = store_images.proxy
    reference = store_images.reference(image_format)
    plain = _podman(podmans, tmp_path / "plain", None, proxy.host)
    proxy.reset()
    started = time.monotonic()
    expected = plain.run(reference, *COMMAND)
    plain_seconds = time.monotonic() - started
    plain_bytes = store_images.layer_bytes(image_format)
    assert expected.returncode == 1 and "/data/gone" in expected.stderr, expected.stderr

    lazy = _podman(podmans, tmp_path / "lazy", store, proxy.host)
    proxy.reset()
    started = time.monotonic()
    got = lazy.run(reference, *COMMAND)
    lazy_seconds = time.monotonic() - started
    lazy_bytes = store_images.layer_bytes(image_format)
    print(f"{image_format}: pull + run {plain_seconds:.2f} s, {plain_bytes} blob bytes; "
          f"through the store {lazy_seconds:.2f} s, {lazy_bytes} blob bytes")  # fmt: skip
    assert (got.returncode, got.stdout) == (1, expected.stdout)
    assert _program_errors(got) == _program_errors(expected) != []
    assert lazy.store_layers() == 2, "podman took both layers from the store"
    assert lazy.layers(reference) == plain.layers(reference)
    if image_format != "gzip":  # a TOC and the chunks read, not the layers
        assert lazy_bytes < sum(store_images.layers[image_format].values()) / 4, lazy_bytes
        assert store_images.whole_layer_gets(image_format) == 0
    in_use = _status(store)["layer_store"]["layers_in_use"]  # type: ignore[index]
    assert {layer["reference"] for layer in in_use} >= {reference}


def test_rmi_releases_the_layers_and_a_second_run_works(
    tmp_path: Path, podmans: list[Podman], store: Mount, store_images: StoreImages
) -> None:
    reference = store_images.reference("gzip")
    podman = _podman(podmans, tmp_path / "podman", store, store_images.proxy.host)
    first = podman.run(reference, *COMMAND)
    assert first.returncode == 1 and first.stdout.count("\n") == 2, first.stderr

    def uses() -> int:
        in_use = _status(store)["layer_store"]["layers_in_use"]  # type: ignore[index]
        return sum(layer["uses"] for layer in in_use if layer["reference"] == reference)

    before = uses()
    podman("rmi", reference)
    assert uses() == before - 2, "one release per layer"
    assert podman.store_layers() == 0
    second = podman.run(reference, *COMMAND)
    assert (second.returncode, second.stdout) == (1, first.stdout)
    assert uses() == before
    assert "layer store" in run_regfs("status", str(store.path)).stdout


def test_an_image_the_store_cannot_serve_is_pulled_by_podman_itself(
    tmp_path: Path, podmans: list[Podman], store: Mount, basic_registry: Registry
) -> None:
    """The store has no credentials for this registry (401 → EACCES, at once): podman,
    which has them, pulls the layers itself; the store logs the refusal once."""
    store.allow_log(r"WARNING .*lookup: .*(401|refused|denied)")
    podman = _podman(podmans, tmp_path / "podman", store, basic_registry.host)
    reference = f"{basic_registry.host}/solo:1"
    started = time.monotonic()
    credentials = f"{BASIC_USER.username}:{BASIC_USER.password}"
    podman("pull", "--creds", credentials, reference)
    assert time.monotonic() - started < 30
    assert podman.store_layers() == 0
    assert len(podman.layers(reference)) == 1


def test_a_registry_gone_mid_run_is_a_clean_error_not_a_hang(
    tmp_path: Path, podmans: list[Podman], store: Mount, store_images: StoreImages
) -> None:
    """An eStargz image pulled through the store (its TOCs only); then its registry goes
    away: reading a file not fetched yet is EIO in the container, within the timeout."""
    store.allow_log(r"WARNING .*(refused|connect|Connection|unavailable|Unavailable)")
    gone = CountingProxy(store_images.registry.port)
    reference = store_images.reference("estargz", gone.host)
    podman = _podman(podmans, tmp_path / "podman", store, gone.host)
    try:
        podman("pull", reference)
        assert podman.store_layers() == 2
    finally:
        gone.stop()
    started = time.monotonic()
    result = podman.run(reference, "/usr/bin/sha256sum", "/data/big")
    assert time.monotonic() - started < 60
    assert result.returncode != 0
    assert "Input/output error" in result.stderr, result.stderr


def test_a_prefetched_image_starts_with_no_fetch(
    tmp_path: Path, podmans: list[Podman], store_images: StoreImages
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
        podman = _podman(podmans, tmp_path / "podman", store, proxy.host)
        proxy.reset()
        result = podman.run(reference, *COMMAND)
        assert result.returncode == 1 and result.stdout.count("\n") == 2, result.stderr
        assert store_images.layer_bytes("gzip") == 0
        podman.close()
    finally:
        store.close()
