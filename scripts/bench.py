#!/usr/bin/env python3
"""Benchmarks: regfs against what a user would run instead, side by side in one run.

Machines are noisy (2 cores): read the ratios, not the absolute times. Needs root, FUSE and
the tools scripts/install.sh installs (and ratarmount in the venv for one comparison).
Run: .venv/bin/python scripts/bench.py [--profile lan|wan|far] [browse] [contents] [places]
[lazy] [refetch] [seqread] [findcold] [coldstart] [run]
(charts need matplotlib: .venv/bin/pip install -e '.[bench]')

``--profile`` puts an emulated network (tests/support/netprofiles.py) between the registry
and everything that reads it, regfs and the tools it is compared with alike; without it
they talk over loopback.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_podman
import coldstart
import plots

from tests.support import images
from tests.support.crafted import ZSTD_LAYER, push_layers
from tests.support.estargz import push_estargz
from tests.support.installed import install_wheel
from tests.support.layered import build_layered, debian_rootfs
from tests.support.mount import Installation, Mount
from tests.support.netprofiles import PROFILES, NetworkProfile
from tests.support.proxy import CountingProxy
from tests.support.registry import Registry

REPOSITORIES = 120
TAGS = 150


class Network:
    profile: NetworkProfile | None = None
    """The link every benchmark's proxy emulates (``--profile``); None: loopback."""


def network_proxy(registry: Registry) -> CountingProxy:
    """A counting proxy in front of ``registry``, over the chosen network profile."""
    return CountingProxy(registry.port, profile=Network.profile)


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def walk(path: Path) -> int:
    """What ``ls -lR`` does: list every dir, stat every entry, read every symlink."""
    count = 0
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            entry = Path(root) / name
            entry.lstat()
            if entry.is_symlink():
                os.readlink(entry)
            count += 1
    return count


def skopeo_list_tags(host: str, repositories: list[str]) -> None:
    for repository in repositories:
        subprocess.run(
            ["skopeo", "list-tags", "--tls-verify=false", f"docker://{host}/{repository}"],
            check=True,
            capture_output=True,
        )


def row(figure: str, regfs: float, other: float, other_name: str) -> None:
    print(f"| {figure} | {regfs:.3f} s | {other:.3f} s ({other_name}) | {regfs / other:.2f} |")


def browse(workdir: Path) -> None:
    registry = Registry(workdir / "registry")
    try:
        layout = workdir / "oci"
        images.build_image(layout, "base", {"etc/os-release": Path("/etc/os-release").read_bytes()})
        images.push(layout, "base", f"{registry.host}/bench/source:t0")
        names = [f"bench/r{i:03}" for i in range(REPOSITORIES)]
        images.repository_copies(registry.url, "bench/source", "t0", names)
        images.tag_copies(registry.url, "bench/source", "t0", [f"t{i}" for i in range(1, TAGS)])
        repositories = images.catalog(registry.url)
        proxy = network_proxy(registry)
        skopeo = timed(lambda: skopeo_list_tags(proxy.host, repositories))
        skopeo_one = timed(lambda: skopeo_list_tags(proxy.host, ["bench/source"]))
        mount = Mount(workdir / "mnt")
        try:
            host = mount / proxy.host
            cold = timed(lambda: walk(host))
            warm = timed(lambda: walk(host))
            entries = walk(host)
        finally:
            mount.close()
        mount = Mount(workdir / "mnt2")  # a fresh mount: nothing cached
        try:
            tags_cold = timed(lambda: walk(mount / proxy.host / "bench/source"))
        finally:
            mount.close()
        tags = [f"t{i}" for i in range(TAGS)]
        floors = {n: timed(partial(head_every_tag, proxy.host, "bench/source", tags, n))
                  for n in (1, 8, 32)}  # fmt: skip
        proxy.stop()
    finally:
        registry.stop()
    print(f"\n{len(repositories)} repositories (catalog pages of 2), {TAGS} tags in one, "
          f"{entries} entries walked")  # fmt: skip
    print("| figure | regfs | instead | ratio |\n|---|---|---|---|")
    row("`ls -lR` of the host, cold mount", cold, skopeo, "`skopeo list-tags` per repository")
    row("`ls -lR` of the host, again (TTL)", warm, skopeo, "`skopeo list-tags` per repository")
    row(f"`ls -l` of a {TAGS}-tag repository, cold mount", tags_cold, skopeo_one,
        "one `skopeo list-tags`")  # fmt: skip
    for at_once, seconds in floors.items():
        row(f"`ls -l` of a {TAGS}-tag repository, cold mount", tags_cold, seconds,
            f"a HEAD per tag by httpx alone, {at_once} at a time")  # fmt: skip
    plots.bars(
        "browse", "Browsing a registry (lower is better)",
        ["ls -lR of the host, cold", "ls -lR of the host, again", f"ls -l of {TAGS} tags, cold"],
        {"regfs": [cold, warm, tags_cold],
         "skopeo list-tags": [skopeo, skopeo, skopeo_one],
         "a HEAD per tag, 8 at a time": [None, None, floors[8]]},
        unit="seconds",
    )  # fmt: skip


def head_every_tag(host: str, repository: str, tags: list[str], at_once: int) -> None:
    """The least a client can do to show where each tag points: one HEAD per tag."""
    accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"

    async def main() -> None:
        limiter = trio.CapacityLimiter(at_once)
        async with httpx.AsyncClient(base_url=f"http://{host}") as client:

            async def head(tag: str) -> None:
                async with limiter:
                    response = await client.head(
                        f"/v2/{repository}/manifests/{tag}", headers={"Accept": accept}
                    )
                    response.raise_for_status()

            async with trio.open_nursery() as nursery:
                for tag in tags:
                    nursery.start_soon(head, tag)

    trio.run(main)


def run(*command: str | Path, cwd: Path | None = None) -> None:
    subprocess.run([str(c) for c in command], check=True, capture_output=True, cwd=cwd)


def read_all(path: Path) -> None:
    with open(path, "rb") as file:
        while file.read(1 << 20):
            pass


def find_ls(path: Path) -> None:
    run("find", path, "-ls")


def tar_all(path: Path) -> None:
    """Read every file of the tree, as a backup would (GNU tar reads nothing when the
    archive is /dev/null itself, so it writes to a pipe)."""
    subprocess.run(f"tar -cf - -C '{path}' . | cat > /dev/null", shell=True, check=True)


def daemon_rss_mib(mount: Mount) -> float:
    pid = mount.pid()
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def drop_page_cache() -> None:
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def contents(workdir: Path) -> None:
    """Figures of issue 4 on the layered Debian image (4 layers, a 64 MiB random file)."""
    debian_rootfs(workdir / "debian")
    layout = workdir / "oci"
    build_layered(layout, "1", workdir / "debian", big_file_size=64 << 20)
    registry = Registry(workdir / "registry")
    proxy = network_proxy(registry)
    try:
        images.push(layout, "1", f"{registry.host}/bench/debian:1")
        manifest = json.loads(images.get_manifest(registry.url, "bench/debian", "1")[0])
        figures = cold_start(workdir, registry, proxy)
        mount = Mount(workdir / "mnt-lazy")  # a fresh cache: count what each step fetches
        try:
            image = mount / proxy.host / "bench/debian/1"
            figures += laziness(image, proxy, manifest)
            figures += warm_figures(workdir, image, manifest)
            tar_all(image / "rootfs")
            figures.append(("daemon RSS after reading the whole image",
                            f"{daemon_rss_mib(mount):.0f} MiB", "≤ 150 MiB"))  # fmt: skip
        finally:
            mount.close()
    finally:
        proxy.stop()
        registry.stop()
    sizes = ", ".join(f"{layer['size'] / 2**20:.1f}" for layer in manifest["layers"])
    print(f"\nlayered Debian image: layers of {sizes} MiB")
    print("| figure | measured | target |\n|---|---|---|")
    for figure, measured, target in figures:
        print(f"| {figure} | {measured} | {target} |")


Figure = tuple[str, str, str]


def ratio(regfs: float, other: float) -> str:
    return f"{regfs:.3f} s / {other:.3f} s = {regfs / other:.2f}"


def cold_start(workdir: Path, registry: Registry, proxy: CountingProxy) -> list[Figure]:
    local = workdir / "local"
    local.mkdir()

    def skopeo_umoci_cat() -> None:
        source = f"docker://{proxy.host}/bench/debian:1"
        run("skopeo", "copy", "--quiet", "--src-tls-verify=false", source, f"oci:{local}/oci:1")
        run("umoci", "unpack", "--image", f"{local}/oci:1", local / "bundle")
        read_all(local / "bundle/rootfs/etc/os-release")

    drop_page_cache()
    instead = timed(skopeo_umoci_cat)
    drop_page_cache()
    start = time.perf_counter()
    mount = Mount(workdir / "mnt-cold")
    try:
        read_all(mount / proxy.host / "bench/debian/1/rootfs/etc/os-release")
        regfs = time.perf_counter() - start
    finally:
        mount.close()
    figure = "cold mount → `cat rootfs/etc/os-release`, vs `skopeo copy` + `umoci unpack` + `cat`"
    return [(figure, ratio(regfs, instead), "≤ 0.5")]


def laziness(image: Path, proxy: CountingProxy, manifest: dict[str, Any]) -> list[Figure]:
    proxy.reset()
    run("ls", "-la", image, f"{image}/")
    beyond_config = proxy.blob_bytes() - proxy.blob_bytes(manifest["config"]["digest"])
    proxy.reset()
    read_all(image / "0/etc/os-release")
    layer0 = proxy.blob_bytes() / manifest["layers"][0]["size"]
    return [
        ("blob bytes fetched by `ls -la TAG/` (beyond config)", str(beyond_config), "0"),
        ("blob bytes fetched to read a file in layer 0 / layer 0 size", f"{layer0:.3f}", "≤ 1.05"),
    ]


def best_of_three(action: Callable[[], object]) -> float:
    action()  # warm up
    return min(timed(action) for _ in range(3))


def warm_figures(workdir: Path, image: Path, manifest: dict[str, Any]) -> list[Figure]:
    local = workdir / "local/bundle/rootfs"
    big = "regfs-test/big.bin"
    regfs_read = best_of_three(lambda: read_all(image / "rootfs" / big))
    local_read = best_of_three(lambda: read_all(local / big))
    regfs_find = best_of_three(lambda: find_ls(image / "rootfs"))
    local_find = best_of_three(lambda: find_ls(local))
    regfs_tar = best_of_three(lambda: tar_all(image / "rootfs"))
    local_tar = best_of_three(lambda: tar_all(local))
    drop_page_cache()
    regfs_find_cold = timed(lambda: find_ls(image / "rootfs"))
    drop_page_cache()
    local_find_cold = timed(lambda: find_ls(local))
    layer0 = workdir / "local/oci/blobs/sha256" / manifest["layers"][0]["digest"].split(":")[1]
    ratar = workdir / "ratarmount"
    ratar.mkdir()
    ratarmount = Path(sys.executable).with_name("ratarmount")
    run(ratarmount, "--index-folders", workdir / "ratar-index", layer0, ratar)
    try:
        ratar_find = best_of_three(lambda: find_ls(ratar))
        layer_find = best_of_three(lambda: find_ls(image / "0"))
    finally:
        run("fusermount3", "-u", ratar)
    return [
        ("warm sequential read of a 64 MiB file: local disk time / regfs time",
         f"{local_read:.3f} s / {regfs_read:.3f} s = {local_read / regfs_read:.2f}", "≥ 0.8"),
        ("`find rootfs -ls`, warm: regfs / local disk (umoci-unpacked copy)",
         ratio(regfs_find, local_find), "≤ 2"),
        ("`tar -c rootfs` (every file read), warm: regfs / local disk",
         ratio(regfs_tar, local_tar), "≤ 2"),
        ("`find rootfs -ls`, kernel caches dropped: regfs / local disk",
         ratio(regfs_find_cold, local_find_cold), "≤ 2"),
        ("`find -ls` of one layer: regfs / ratarmount on the same blob",
         ratio(layer_find, ratar_find), "≤ 1"),
    ]  # fmt: skip


def places(workdir: Path) -> None:
    """Issue 8: a fleet behind a registry:2 pull-through cache, against the registry direct.

    Each figure is a cold regfs cache and a dropped page cache: mount, then read
    ``rootfs/etc/os-release`` of the layered Debian image (every layer is fetched)."""
    debian_rootfs(workdir / "debian")
    layout = workdir / "oci"
    build_layered(layout, "1", workdir / "debian")
    origin = Registry(workdir / "origin")
    far_origin = network_proxy(origin)  # the mirror is near: only the origin is over the link
    mirror = Registry(workdir / "mirror", proxy_remote=f"http://{far_origin.host}")
    home = workdir / "home"
    (home / ".config/containers").mkdir(parents=True)
    (home / ".config/containers/registries.conf").write_text(
        f'[[registry]]\nprefix = "fleet.example"\nlocation = "{far_origin.host}"\n'
        f'[[registry.mirror]]\nlocation = "{mirror.host}"\n'
    )
    try:
        images.push(layout, "1", f"{origin.host}/bench/debian:1")

        def cold_read(name: str, host: str) -> float:
            drop_page_cache()
            start = time.perf_counter()
            mount = Mount(workdir / name, environment={"HOME": str(home)})
            try:
                read_all(mount / host / "bench/debian/1/rootfs/etc/os-release")
                return time.perf_counter() - start
            finally:
                mount.close()

        direct = cold_read("direct", far_origin.host)
        mirror_cold = cold_read("mirror-cold", "fleet.example")
        mirror_warm = cold_read("mirror-warm", "fleet.example")
        mirror.stop()
        mirror_down = cold_read("mirror-down", "fleet.example")
    finally:
        far_origin.stop()
        origin.stop()
    print("\ncold mount → `cat rootfs/etc/os-release` of the layered Debian image")
    print("| path | time | / direct |\n|---|---|---|")
    for label, seconds in (("registry direct", direct), ("mirror, its cache cold", mirror_cold),
                           ("mirror, its cache warm (a second machine)", mirror_warm),
                           ("mirror down (refused), falls through", mirror_down)):  # fmt: skip
        print(f"| {label} | {seconds:.3f} s | {seconds / direct:.2f} |")


def lazy(workdir: Path) -> None:
    """Issue 10: the first read of a small file in a layer with a 256 MiB file, as plain
    gzip (the whole layer is fetched), eStargz, zstd:chunked and gzip with a SOCI index
    made by ``regfs index push`` (its chunks or spans only).

    Each figure is a cold regfs cache and a dropped page cache: mount, then read
    ``rootfs/etc/os-release``; bytes counted by a proxy."""
    layout = workdir / "oci"
    os_release = Path("/etc/os-release").read_bytes()
    files = {"big.bin": os.urandom(256 << 20), "etc/os-release": os_release}
    images.build_image(layout, "1", files)
    rows = []
    for name in os.environ.get("REGFS_BENCH_FORMATS", "gzip estargz zstd-chunked soci").split():
        # A registry each: skopeo would reuse a blob of the same diff ID pushed in another
        # compression, and the image would not be what its name says.
        registry = Registry(workdir / f"registry-{name}")
        proxy = network_proxy(registry)
        try:
            destination = f"{registry.host}/bench/{name}:1"
            if name == "estargz":
                push_estargz(layout, "1", destination, workdir / name)
            elif name == "zstd-chunked":
                images.push(layout, "1", destination, "--dest-compress-format", "zstd:chunked")
            else:
                images.push(layout, "1", destination)
            if name == "soci":  # the same gzip image, given a SOCI index by regfs
                run(Installation.regfs(), "index", "push", destination)
            body, _, _ = images.get_manifest(registry.url, f"bench/{name}", "1")
            (layer,) = json.loads(body)["layers"]
            drop_page_cache()
            proxy.reset()
            start = time.perf_counter()
            # regfs index push makes a v1 index: a referrer, used only when allowed
            options = ("--soci-v1-referrers",) if name == "soci" else ()
            mount = Mount(workdir / f"mnt-{name}", *options)
            try:
                read_all(mount / proxy.host / f"bench/{name}/1/rootfs/etc/os-release")
                seconds = time.perf_counter() - start
            finally:
                mount.close()
            fetched = proxy.blob_bytes(layer["digest"])
            drop_page_cache()
            instead = timed(partial(skopeo_tar_cat, proxy.host, f"bench/{name}:1", workdir / name))
            rows.append((name, seconds, instead, fetched, layer["size"]))
        finally:
            proxy.stop()
            registry.stop()
    gzip_seconds = rows[0][1]
    print("\ncold mount → `cat rootfs/etc/os-release`, beside a 256 MiB random file")
    print("| layer format | regfs | / gzip | skopeo copy + tar -x + cat | regfs / that "
          "| layer bytes fetched | / layer size |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name, seconds, instead, fetched, size in rows:
        print(f"| {name} | {seconds:.3f} s | {seconds / gzip_seconds:.3f} | {instead:.3f} s | "
              f"{seconds / instead:.3f} | {fetched / 2**20:.2f} MiB | "
              f"{fetched / size:.4f} |")  # fmt: skip
    plots.bars(
        "lazy", "Cold mount, then cat a small file beside a 256 MiB file (lower is better)",
        [name for name, *_ in rows],
        {"regfs": [seconds for _, seconds, *_ in rows],
         "skopeo copy + tar -x + cat": [instead for _, _, instead, *_ in rows]},
        unit="seconds",
    )  # fmt: skip


def skopeo_tar_cat(host: str, reference: str, directory: Path) -> None:
    """What a user does without regfs: copy the image, unpack its layers, read the file
    (GNU tar reads gzip and zstd alike; umoci reads no zstd)."""
    local = directory / "instead"
    directory.mkdir(parents=True, exist_ok=True)
    run("skopeo", "copy", "--quiet", "--src-tls-verify=false",
        f"docker://{host}/{reference}", f"dir:{local}")  # fmt: skip
    manifest = json.loads((local / "manifest.json").read_bytes())
    rootfs = local / "rootfs"
    rootfs.mkdir()
    for layer in manifest["layers"]:
        run("tar", "-xf", local / layer["digest"].split(":")[1], "-C", rootfs)
    read_all(rootfs / "etc/os-release")


def refetch(workdir: Path) -> None:
    """Issue 10: re-reading a file whose chunks were evicted, per layer compression.

    A layer of eight 8 MiB random files (compressed size ≈ their size), pushed as gzip
    (skopeo), zstd (skopeo: one frame) and pzstd (a frame per 8 MiB). For each: index the
    layer, delete every cached chunk, drop the page cache, then read ``f6`` (48 to 56 MiB
    into the tar) and count the blob bytes fetched."""
    files = {f"f{n}": os.urandom(8 << 20) for n in range(8)}
    layout = workdir / "oci"
    images.build_image(layout, "1", files)
    registry = Registry(workdir / "registry")
    proxy = network_proxy(registry)
    rows = []
    try:
        images.push(layout, "1", f"{registry.host}/bench/gzip:1")
        zstd_layout = workdir / "zstd"
        run("skopeo", "copy", "--dest-compress", "--dest-compress-format", "zstd",
            f"oci:{layout}:1", f"oci:{zstd_layout}:1")  # fmt: skip
        images.push(zstd_layout, "1", f"{registry.host}/bench/zstd:1")
        tar = workdir / "layer.tar"
        run("umoci", "unpack", "--image", f"{layout}:1", workdir / "bundle")
        run("tar", "-cf", tar, "-C", workdir / "bundle/rootfs", ".")
        run("pzstd", "-q", "-p", "2", tar)
        blob = Path(f"{tar}.zst").read_bytes()
        push_layers(registry.url, "bench/pzstd:1", [blob], media_type=ZSTD_LAYER)
        for name in ("gzip", "zstd", "pzstd"):
            cache = workdir / f"cache-{name}"
            mount = Mount(workdir / f"mnt-{name}", "--cache-dir", str(cache))
            try:
                rootfs = mount / proxy.host / f"bench/{name}/1/rootfs"
                os.listdir(rootfs)  # indexes the layer: every chunk lands in the cache
                for chunk in (cache / "chunks").rglob("*"):
                    if chunk.is_file():
                        chunk.unlink()
                drop_page_cache()
                proxy.reset()
                seconds = timed(partial(read_all, rootfs / "f6"))
                rows.append((name, seconds, proxy.blob_bytes()))
            finally:
                mount.close()
    finally:
        proxy.stop()
        registry.stop()
    print("\nre-read of an evicted 8 MiB file, 48 MiB into a 64 MiB layer of random files")
    print("| layer | time | blob bytes fetched | / bytes read (target ≤ 4) |\n|---|---|---|---|")
    for name, seconds, fetched in rows:
        print(f"| {name} | {seconds:.3f} s | {fetched / 2**20:.1f} MiB | "
              f"{fetched / (8 << 20):.2f} |")  # fmt: skip
    plots.bars(
        "refetch", "Re-reading 8 MiB whose chunks were evicted (lower is better)",
        [name for name, *_ in rows],
        {"blob bytes fetched / bytes read": [fetched / (8 << 20) for _, _, fetched in rows]},
        unit="ratio", target=4,
    )  # fmt: skip


def read_each(directory: Path, names: list[str]) -> None:
    """Read the files one after another, as a single-threaded program does."""
    for name in names:
        read_all(directory / name)


SMALL_FILES_FROM = ("/usr/lib/python3.11/email", "/usr/lib/python3.11/json")
"""Real small files, read one after another as a program's start reads its modules."""


def seqread(workdir: Path) -> None:
    """Issue 21: a cold sequential read of a 64 MiB file, and a cold read of ~40 small
    files one after another, through TOC layers (eStargz, zstd:chunked); each with the
    proxy adding ``REGFS_BENCH_DELAYS`` seconds to every Range request (one round trip of
    a link that far away; bandwidth is not capped). Counts the Range requests each cost.
    With ``REGFS_BENCH_BASELINE`` (another regfs source tree), that one too, side by side."""
    layout = workdir / "oci"
    files = {"big.bin": os.urandom(64 << 20)}
    for directory in SMALL_FILES_FROM:
        for path in sorted(Path(directory).rglob("*.py")):
            files[str(path).lstrip("/")] = path.read_bytes()
    small = [name for name in files if name != "big.bin"]
    images.build_image(layout, "1", files)
    delays = [float(d) for d in os.environ.get("REGFS_BENCH_DELAYS", "0 0.03").split()]
    installations = baseline_installations(workdir)
    rows = []
    for name in os.environ.get("REGFS_BENCH_FORMATS", "estargz zstd-chunked").split():
        registry = Registry(workdir / f"registry-{name}")
        proxy = CountingProxy(registry.port)
        try:
            destination = f"{registry.host}/bench/{name}:1"
            if name == "estargz":
                push_estargz(layout, "1", destination, workdir / name)
            elif name == "zstd-chunked":
                images.push(layout, "1", destination, "--dest-compress-format", "zstd:chunked")
            else:
                images.push(layout, "1", destination)
            for (label, bin_dir), delay in itertools.product(installations, delays):
                Installation.use(bin_dir)
                for what, paths in (("big", ["big.bin"]), ("small", small)):
                    mount = Mount(workdir / f"mnt-{label}-{name}-{delay}-{what}")
                    try:
                        rootfs = mount / proxy.host / f"bench/{name}/1/rootfs"
                        os.listdir(rootfs)  # the TOC: not what is measured
                        drop_page_cache()
                        proxy.reset()
                        proxy.range_delay = delay
                        seconds = timed(partial(read_each, rootfs, paths))
                        proxy.range_delay = 0
                        requests = sum(proxy.requests_by_path.values())
                        fetched = proxy.blob_bytes()
                    finally:
                        mount.close()
                    size = sum(len(files[p]) for p in paths)
                    rows.append((label, name, delay, what, len(paths), size, seconds, requests,
                                 fetched))  # fmt: skip
        finally:
            proxy.stop()
            registry.stop()
    print("\ncold reads through a TOC (Range requests delayed by the proxy)")
    print("| regfs | layer | delay | read | seconds | MiB/s | requests | MiB fetched |")
    print("|---|---|---|---|---|---|---|---|")
    for label, name, delay, what, count, size, seconds, requests, fetched in rows:
        read = "a 64 MiB file" if what == "big" else f"{count} small files"
        print(f"| {label} | {name} | {delay * 1000:.0f} ms | {read} | {seconds:.3f} | "
              f"{size / seconds / 2**20:.1f} | {requests} | {fetched / 2**20:.2f} |")  # fmt: skip


def baseline_installations(workdir: Path) -> list[tuple[str, Path]]:
    """The regfs under test, and with ``REGFS_BENCH_BASELINE`` (another regfs source tree,
    e.g. ``git archive main``) that one too, installed beside it, to measure side by side."""
    found = [("this regfs", Installation.bin_dir)]
    baseline = os.environ.get("REGFS_BENCH_BASELINE")
    if baseline:
        environment = workdir / "baseline-venv"
        run(sys.executable, "-m", "venv", environment)
        wheels = sorted(Path("build/pyfuse3").glob("pyfuse3-*.whl"))
        run(environment / "bin/python", "-m", "pip", "install", "--quiet", *wheels[-1:], baseline)
        found.append(("baseline", environment / "bin"))
    return found


def copy_unpack_cat(host: str, local: Path) -> None:
    local.mkdir()
    source = f"docker://{host}/bench/debian:1"
    run("skopeo", "copy", "--quiet", "--src-tls-verify=false", source, f"oci:{local}/oci:1")
    run("umoci", "unpack", "--image", f"{local}/oci:1", local / "bundle")
    read_all(local / "bundle/rootfs/etc/issue")


def findcold(workdir: Path) -> None:
    """Issue 21: the layered Debian image (4 plain gzip layers): `find rootfs -ls` with the
    kernel's caches dropped (the daemon's own kept), against the same on local disk; and a
    cold mount → `cat` of a file in the top-most layer with files (layer 1) and in the
    bottom one, through a proxy whose blob requests wait ``REGFS_BENCH_DELAY`` seconds
    (default 0), against skopeo copy + umoci unpack + cat."""
    debian_rootfs(workdir / "debian")
    layout = workdir / "oci"
    build_layered(layout, "1", workdir / "debian")
    registry = Registry(workdir / "registry")
    proxy = CountingProxy(registry.port)
    local = workdir / "local"
    rows = []
    try:
        images.push(layout, "1", f"{registry.host}/bench/debian:1")
        delay = float(os.environ.get("REGFS_BENCH_DELAY", "0"))
        drop_page_cache()  # skopeo does not go through the proxy (it refuses its answers)
        rows.append(("-", "skopeo copy + umoci unpack + cat etc/issue",
                     timed(partial(copy_unpack_cat, registry.host, local))))  # fmt: skip
        for label, bin_dir in baseline_installations(workdir):
            Installation.use(bin_dir)
            for name in ("etc/issue", "etc/os-release"):
                drop_page_cache()
                proxy.slow = [("/blobs/", delay)]
                start = time.perf_counter()
                mount = Mount(workdir / f"mnt-{label}-{name.replace('/', '-')}")
                try:
                    read_all(mount / proxy.host / "bench/debian/1/rootfs" / name)
                    rows.append((label, f"cold mount → cat rootfs/{name}",
                                 time.perf_counter() - start))  # fmt: skip
                finally:
                    proxy.slow = []
                    mount.close()
            mount = Mount(workdir / f"mnt-{label}")
            try:
                rootfs = mount / registry.host / "bench/debian/1/rootfs"
                find_ls(rootfs)  # every layer indexed, the daemon's listings filled
                regfs_times, local_times = [], []
                for _ in range(3):
                    drop_page_cache()
                    regfs_times.append(timed(partial(find_ls, rootfs)))
                    drop_page_cache()
                    local_times.append(timed(partial(find_ls, local / "bundle/rootfs")))
                rows.append((label, "find rootfs -ls, caches dropped", min(regfs_times)))
                rows.append((label, "find -ls on local disk, caches dropped", min(local_times)))
            finally:
                mount.close()
    finally:
        proxy.stop()
        registry.stop()
    print(f"\nlayered Debian image, plain gzip (blob requests delayed {delay * 1000:.0f} ms)")
    print("| regfs | figure | seconds |\n|---|---|---|")
    for label, figure, seconds in rows:
        print(f"| {label} | {figure} | {seconds:.3f} |")


def podman_runs(workdir: Path) -> None:
    """Issue 20 (scripts/bench_podman.py), on the ``--profile`` given, else on loopback."""
    bench_podman.run(workdir, Network.profile)


def cold_start_of_python(workdir: Path) -> None:
    """Issue 21 (scripts/coldstart.py): on the ``--profile`` given, else on each profile."""
    profiles = [Network.profile] if Network.profile else list(PROFILES.values())
    coldstart.coldstart(workdir, profiles)


BENCHMARKS = {
    "browse": browse, "contents": contents, "places": places, "lazy": lazy, "refetch": refetch,
    "seqread": seqread, "findcold": findcold, "coldstart": cold_start_of_python,
    "run": podman_runs,
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), help="an emulated network")
    parser.add_argument("benchmarks", nargs="*", metavar="BENCHMARK", help=", ".join(BENCHMARKS))
    arguments = parser.parse_args()
    unknown = set(arguments.benchmarks) - set(BENCHMARKS)
    if unknown:
        parser.error(f"no benchmark {', '.join(sorted(unknown))}")
    chosen = arguments.benchmarks or list(BENCHMARKS)
    Network.profile = PROFILES[arguments.profile] if arguments.profile else None
    print(f"network: {Network.profile.describe() if Network.profile else 'loopback'}")
    with tempfile.TemporaryDirectory(prefix="regfs-bench-installed-") as installation:
        Installation.use(install_wheel(Path(installation)))  # measure what users install
        for name in chosen:
            with tempfile.TemporaryDirectory(prefix=f"regfs-bench-{name}-") as directory:
                BENCHMARKS[name](Path(directory))


if __name__ == "__main__":
    main()
