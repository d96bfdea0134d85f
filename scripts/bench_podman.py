"""Issue 20: a cold ``podman run`` through regfs's layer store against ``podman pull`` + run.

One image per layer format (gzip, eStargz, zstd:chunked, gzip with a SOCI v2 index), each
on a registry:2 of its own (skopeo would reuse a blob of the same diff ID pushed in
another compression) behind a counting proxy. The image: a Debian minbase layer and an
application layer holding a 64 MiB random file the command never reads. For each format:

- pull: a fresh podman storage, ``podman pull`` then ``podman run --rm IMAGE cat
  /etc/os-release``;
- store: a fresh podman storage and a fresh regfs cache, a ``regfs mount --layer-store``
  (started before the clock), then the same ``podman run`` (which pulls through it).

The page cache is dropped before each; blob bytes are what the proxy served (configs,
layers, TOCs and zTOCs). Each side runs ``REGFS_BENCH_ROUNDS`` times (3), alternately, and
its median is reported: on two noisy cores one cold store run of the same code took
anything from 0.63 s to 0.98 s. Used by scripts/bench.py (``run``).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import plots

from tests.support import images, soci
from tests.support.estargz import push_estargz
from tests.support.layered import debian_rootfs
from tests.support.mount import Installation, Mount
from tests.support.netprofiles import NetworkProfile
from tests.support.podman import Podman
from tests.support.proxy import CountingProxy
from tests.support.registry import Registry

FORMATS = ("gzip", "estargz", "zstd-chunked", "soci")
COMMAND = ("cat", "/etc/os-release")
APP_FILE_SIZE = 64 << 20
TARGETS = {"gzip": 0.7, "estargz": 0.2, "zstd-chunked": 0.2, "soci": 0.2}
"""Time through the store / pull + run (issue 20); bytes: ≤ 0.1 for the lazy formats."""


@dataclass(frozen=True)
class Measured:
    seconds: float
    blob_bytes: int


def build_image(layout: Path, rootfs: Path, work: Path) -> None:
    """Debian minbase (layer 0) and ``/opt/app/data.bin``, 64 MiB random (layer 1). Made
    by ``umoci repack``: ``umoci insert`` writes a tar without its end-of-archive blocks,
    on which skopeo 1.9's zstd:chunked compression waits forever."""
    images.run("umoci", "init", "--layout", layout)
    image = f"{layout}:1"
    images.run("umoci", "new", "--image", image)
    images.run("umoci", "config", "--image", image, "--architecture", "amd64", "--os", "linux")
    bundle = work / "bundle"
    images.run("umoci", "unpack", "--image", image, bundle)
    images.run("cp", "-a", f"{rootfs}/.", bundle / "rootfs")
    images.run("umoci", "repack", "--refresh-bundle", "--image", image, bundle)
    (bundle / "rootfs/opt/app").mkdir(parents=True)
    (bundle / "rootfs/opt/app/data.bin").write_bytes(os.urandom(APP_FILE_SIZE))
    images.run("umoci", "repack", "--image", image, bundle)
    shutil.rmtree(bundle)


def push(name: str, layout: Path, registry: Registry, work: Path) -> None:
    """The image as ``bench/NAME:1`` in format ``name``."""
    destination = f"{registry.host}/bench/{name}:1"
    if name == "estargz":
        push_estargz(layout, "1", destination, work / "estargz")
    elif name == "zstd-chunked":
        images.push(layout, "1", destination, "--dest-compress-format", "zstd:chunked")
    elif name == "soci":  # gzip, indexed by regfs, named by a v2 index as soci convert does
        images.push(layout, "1", f"{registry.host}/bench/soci:plain")
        images.run(Installation.regfs(), "index", "push", f"{registry.host}/bench/soci:plain")
        manifest, _, _ = images.get_manifest(registry.url, "bench/soci", "plain")
        soci.push_v2(registry.url, "bench/soci", manifest, "1")
    else:
        images.push(layout, "1", destination)


def measure(proxy: CountingProxy, action: Callable[[], None]) -> Measured:
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
    proxy.reset()
    start = time.perf_counter()
    action()
    return Measured(time.perf_counter() - start, proxy.blob_bytes())


def _run(podman: Podman, reference: str) -> None:
    result = podman.run(reference, *COMMAND)
    if result.returncode != 0 or "PRETTY_NAME" not in result.stdout:
        raise RuntimeError(f"podman run {reference}: {result.stderr}")


def compare(name: str, work: Path, proxy: CountingProxy) -> tuple[Measured, Measured]:
    """(pull + run, run through the store) of the image in format ``name``: the medians
    of ``REGFS_BENCH_ROUNDS`` rounds, each with fresh podman storage and regfs cache."""
    pulls, stores = [], []
    for round_number in range(_rounds()):
        pulls.append(_pulled(name, work / f"round-{round_number}", proxy))
        stores.append(_stored(name, work / f"round-{round_number}", proxy))
    return _median(pulls), _median(stores)


def _rounds() -> int:
    return int(os.environ.get("REGFS_BENCH_ROUNDS", "3"))


def _median(measured: list[Measured]) -> Measured:
    return Measured(statistics.median(m.seconds for m in measured),
                    round(statistics.median(m.blob_bytes for m in measured)))  # fmt: skip


def _pulled(name: str, work: Path, proxy: CountingProxy) -> Measured:
    """``podman pull`` + run, with storage of its own."""
    reference = f"{proxy.host}/bench/{name}:1"
    plain = Podman(work / f"pull-{name}", None, [proxy.host])
    try:

        def pull_and_run() -> None:
            plain("pull", reference)
            _run(plain, reference)

        return measure(proxy, pull_and_run)
    finally:
        plain.close()


def _stored(name: str, work: Path, proxy: CountingProxy) -> Measured:
    """The run through a new store mount with a cache of its own."""
    reference = f"{proxy.host}/bench/{name}:1"
    store = Mount(work / f"store-{name}", "--layer-store", "--cache-dir",
                  str(work / f"cache-{name}"))  # fmt: skip
    try:
        lazy = Podman(work / f"lazy-{name}", store.path, [proxy.host])
        try:
            stored = measure(proxy, lambda: _run(lazy, reference))
            in_store = lazy.store_layers()
        finally:
            lazy.close()
    finally:
        store.close()
    if in_store != 2:
        raise RuntimeError(f"{name}: podman took {in_store} of 2 layers from the store")
    return stored


def run(workdir: Path, profile: NetworkProfile | None = None) -> None:
    """Each format's comparison, over the emulated network ``profile`` (None: loopback)."""
    debian_rootfs(workdir / "debian")
    layout = workdir / "oci"
    build_image(layout, workdir / "debian", workdir)
    rows = []
    for name in os.environ.get("REGFS_BENCH_FORMATS", " ".join(FORMATS)).split():
        registry = Registry(workdir / f"registry-{name}")
        proxy = CountingProxy(registry.port, profile=profile)
        try:
            push(name, layout, registry, workdir)
            manifest = json.loads(images.get_manifest(registry.url, f"bench/{name}", "1")[0])
            sizes = [layer["size"] for layer in manifest["layers"]]
            rows.append((name, sizes, *compare(name, workdir, proxy)))
        finally:
            proxy.stop()
            registry.stop()
    report(rows)


def report(rows: list[tuple[str, list[int], Measured, Measured]]) -> None:
    print(f"\ncold `podman run --rm IMAGE {' '.join(COMMAND)}`: through the regfs layer store "
          "(fresh podman storage and regfs cache) vs `podman pull` + the same run; "
          f"medians of {_rounds()} rounds")  # fmt: skip
    print("| format | layers (MiB) | pull + run | through the store | time ratio (target) "
          "| blob bytes: pull | store | bytes ratio |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name, sizes, pulled, stored in rows:
        layers = " + ".join(f"{size / 2**20:.1f}" for size in sizes)
        print(f"| {name} | {layers} | {pulled.seconds:.2f} s | {stored.seconds:.2f} s | "
              f"{stored.seconds / pulled.seconds:.2f} (≤ {TARGETS[name]}) | "
              f"{pulled.blob_bytes / 2**20:.1f} MiB | {stored.blob_bytes / 2**20:.2f} MiB | "
              f"{stored.blob_bytes / pulled.blob_bytes:.3f} |")  # fmt: skip
    labels = [name for name, *_ in rows]
    plots.bars(
        "run", f"Cold podman run … {' '.join(COMMAND)} (lower is better)", labels,
        {"through the regfs layer store": [stored.seconds for *_, stored in rows],
         "podman pull + run": [pulled.seconds for *_, pulled, _ in rows]},
        unit="seconds",
    )  # fmt: skip
    plots.bars(
        "run-bytes", f"Blob bytes fetched by a cold podman run … {' '.join(COMMAND)}", labels,
        {"through the regfs layer store": [stored.blob_bytes / 2**20 for *_, stored in rows],
         "podman pull + run": [pulled.blob_bytes / 2**20 for *_, pulled, _ in rows]},
        unit="MiB",
    )  # fmt: skip
