#!/usr/bin/env python3
"""Benchmarks: regfs against what a user would run instead, side by side in one run.

Machines are noisy (2 cores): read the ratios, not the absolute times. Needs root, FUSE and
the tools scripts/install.sh installs (and ratarmount in the venv for one comparison).
Run: .venv/bin/python scripts/bench.py [browse] [contents]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import images
from tests.support.layered import build_layered, debian_rootfs
from tests.support.mount import Mount
from tests.support.proxy import CountingProxy
from tests.support.registry import Registry

REPOSITORIES = 120
TAGS = 150


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
        skopeo = timed(lambda: skopeo_list_tags(registry.host, repositories))
        skopeo_one = timed(lambda: skopeo_list_tags(registry.host, ["bench/source"]))
        mount = Mount(workdir / "mnt")
        try:
            host = mount / registry.host
            cold = timed(lambda: walk(host))
            warm = timed(lambda: walk(host))
            entries = walk(host)
        finally:
            mount.close()
        mount = Mount(workdir / "mnt2")  # a fresh mount: nothing cached
        try:
            tags_cold = timed(lambda: walk(mount / registry.host / "bench/source"))
        finally:
            mount.close()
    finally:
        registry.stop()
    print(f"\n{len(repositories)} repositories (catalog pages of 2), {TAGS} tags in one, "
          f"{entries} entries walked")  # fmt: skip
    print("| figure | regfs | instead | ratio |\n|---|---|---|---|")
    row("`ls -lR` of the host, cold mount", cold, skopeo, "`skopeo list-tags` per repository")
    row("`ls -lR` of the host, again (TTL)", warm, skopeo, "`skopeo list-tags` per repository")
    row(f"`ls -l` of a {TAGS}-tag repository, cold mount", tags_cold, skopeo_one,
        "one `skopeo list-tags`")  # fmt: skip


def run(*command: str | Path, cwd: Path | None = None) -> None:
    subprocess.run([str(c) for c in command], check=True, capture_output=True, cwd=cwd)


def read_all(path: Path) -> None:
    with open(path, "rb") as file:
        while file.read(1 << 20):
            pass


def find_ls(path: Path) -> None:
    run("find", path, "-ls")


def daemon_rss_mib(mount: Mount) -> float:
    pid = int(mount.log().split()[2])
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
    proxy = CountingProxy(registry.port)
    try:
        images.push(layout, "1", f"{registry.host}/bench/debian:1")
        manifest = json.loads(images.get_manifest(registry.url, "bench/debian", "1")[0])
        layer_sizes = [layer["size"] for layer in manifest["layers"]]
        local = workdir / "local"
        local.mkdir()

        def skopeo_umoci_cat() -> None:
            run("skopeo", "copy", "--quiet", "--src-tls-verify=false",
                f"docker://{registry.host}/bench/debian:1", f"oci:{local / 'oci'}:1")  # fmt: skip
            run("umoci", "unpack", "--image", f"{local / 'oci'}:1", local / "bundle")
            read_all(local / "bundle/rootfs/etc/os-release")

        drop_page_cache()
        instead_cold = timed(skopeo_umoci_cat)
        drop_page_cache()
        mount = Mount(workdir / "mnt")
        image = mount / proxy.host / "bench/debian/1"
        try:
            start = time.perf_counter()
            read_all(image / "rootfs/etc/os-release")
            regfs_cold = time.perf_counter() - start
        finally:
            mount.close()

        mount = Mount(workdir / "mnt-lazy")  # a fresh cache: count what each step fetches
        image = mount / proxy.host / "bench/debian/1"
        try:
            proxy.reset()
            os.listdir(image)
            beyond_config = proxy.blob_bytes() - proxy.blob_bytes(manifest["config"]["digest"])
            proxy.reset()
            read_all(image / "0/etc/os-release")
            layer0_ratio = proxy.blob_bytes() / layer_sizes[0]

            big = image / "rootfs/regfs-test/big.bin"
            local_big = local / "bundle/rootfs/regfs-test/big.bin"
            read_all(big)
            read_all(local_big)
            regfs_warm = min(timed(lambda: read_all(big)) for _ in range(3))
            local_warm = min(timed(lambda: read_all(local_big)) for _ in range(3))

            rootfs = image / "rootfs"
            find_ls(rootfs)
            find_ls(local / "bundle/rootfs")
            regfs_find = min(timed(lambda: find_ls(rootfs)) for _ in range(3))
            local_find = min(timed(lambda: find_ls(local / "bundle/rootfs")) for _ in range(3))

            layer0_blob = local / "oci/blobs/sha256" / manifest["layers"][0]["digest"].split(":")[1]
            ratar = workdir / "ratarmount"
            ratar.mkdir()
            ratarmount = Path(sys.executable).with_name("ratarmount")
            run(ratarmount, "--index-folders", workdir / "ratar-index", layer0_blob, ratar)
            try:
                find_ls(ratar)
                find_ls(image / "0")
                ratar_find = min(timed(lambda: find_ls(ratar)) for _ in range(3))
                layer_find = min(timed(lambda: find_ls(image / "0")) for _ in range(3))
            finally:
                run("fusermount3", "-u", ratar)

            run("tar", "-cf", "/dev/null", "-C", rootfs, ".")
            rss = daemon_rss_mib(mount)
        finally:
            mount.close()
    finally:
        proxy.stop()
        registry.stop()

    print(
        f"\nlayered Debian image: layers of {', '.join(f'{s / 2**20:.1f}' for s in layer_sizes)} MiB"
    )
    print("| figure | measured | target |\n|---|---|---|")
    print(
        f"| cold mount → `cat rootfs/etc/os-release`, vs `skopeo copy` + `umoci unpack` + `cat` "
        f"| {regfs_cold:.2f} s / {instead_cold:.2f} s = {regfs_cold / instead_cold:.2f} | ≤ 0.5 |"
    )
    print(f"| blob bytes fetched by `ls TAG/` (beyond config) | {beyond_config} | 0 |")
    print(
        f"| blob bytes fetched to read a file in layer 0 / layer 0 size | {layer0_ratio:.3f} | ≤ 1.05 |"
    )
    print(
        f"| warm sequential read of a 64 MiB file: local disk time / regfs time "
        f"| {local_warm:.3f} s / {regfs_warm:.3f} s = {local_warm / regfs_warm:.2f} | ≥ 0.8 |"
    )
    print(
        f"| `find rootfs -ls`: regfs / local disk (umoci-unpacked copy) "
        f"| {regfs_find:.3f} s / {local_find:.3f} s = {regfs_find / local_find:.2f} | ≤ 2 |"
    )
    print(
        f"| `find -ls` of one layer: regfs / ratarmount on the same blob "
        f"| {layer_find:.3f} s / {ratar_find:.3f} s = {layer_find / ratar_find:.2f} | ≤ 1 |"
    )
    print(f"| daemon RSS after reading the whole image | {rss:.0f} MiB | ≤ 150 MiB |")  # fmt: skip


BENCHMARKS = {"browse": browse, "contents": contents}


def main() -> None:
    chosen = sys.argv[1:] or list(BENCHMARKS)
    for name in chosen:
        with tempfile.TemporaryDirectory(prefix=f"regfs-bench-{name}-") as directory:
            BENCHMARKS[name](Path(directory))


if __name__ == "__main__":
    main()
