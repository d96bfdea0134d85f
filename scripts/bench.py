#!/usr/bin/env python3
"""Benchmarks: regfs against what a user would run instead, side by side in one run.

Machines are noisy (2 cores): read the ratios, not the absolute times. Needs root, FUSE and
the tools scripts/install.sh installs. Run: .venv/bin/python scripts/bench.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import images
from tests.support.mount import Mount
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


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="regfs-bench-") as directory:
        browse(Path(directory))


if __name__ == "__main__":
    main()
