"""Pinned images: kept through eviction and through a registry outage, released by unpin.

A registry:2 of this module's own holds an image to pin (a 24 MiB file that does not
compress, and small ones) and three fillers of 28 MiB each. The cache dir is bounded at
64 MiB, so reading the fillers evicts whatever is not pinned; the pins may hold four
fifths of it, 51.2 MiB. regfs is the installed wheel, run as a user runs it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.mount.test_offline import UNREACHABLE
from tests.support import images
from tests.support.mount import Mount, run_regfs
from tests.support.registry import Registry

pytestmark = pytest.mark.mount
SIZE = "64M"
PINNED = {
    "etc/motd": b"kept whatever else is read\n",
    "etc/os-release": Path("/etc/os-release").read_bytes(),
    "usr/lib/pinned.bin": os.urandom(24 << 20),
}
FILLER_SIZE = 28 << 20
FILLERS = 3


@dataclass
class Pinning:
    registry: Registry

    @property
    def host(self) -> str:
        return self.registry.host

    @property
    def image(self) -> str:
        return f"{self.host}/pinned/app:1"

    def layer(self, repository: str) -> str:
        manifest = images.get_manifest(self.registry.url, repository, "1")[0]
        return str(json.loads(manifest)["layers"][0]["digest"])


@pytest.fixture(scope="module")
def pinning(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pinning]:
    work = tmp_path_factory.mktemp("pins")
    registry = Registry(work / "registry")
    images.build_image(work / "oci", "pinned", PINNED)
    images.push(work / "oci", "pinned", f"{registry.host}/pinned/app:1")
    for number in range(FILLERS):
        images.build_image(work / "oci", f"f{number}", {"filler.bin": os.urandom(FILLER_SIZE)})
        images.push(work / "oci", f"f{number}", f"{registry.host}/filler/{number}:1")
    yield Pinning(registry)
    registry.stop()


@pytest.fixture
def registry_back(pinning: Pinning) -> Iterator[Registry]:
    """The registry, started again after the test if the test killed it."""
    yield pinning.registry
    pinning.registry.start_if_killed()


def mount_on(cache: Path, where: Path) -> Mount:
    return Mount(where, "--cache-dir", str(cache), "--cache-size", SIZE, "--timeout", "5")


def fill(cache: Path, where: Path, host: str) -> None:
    """Read every filler whole through a mount on ``cache``: 84 MiB through 64."""
    mount = mount_on(cache, where)
    try:
        for number in range(FILLERS):
            data = (mount / host / f"filler/{number}/1/rootfs/filler.bin").read_bytes()
            assert len(data) == FILLER_SIZE
    finally:
        mount.close()


def stats(cache: Path) -> dict[str, object]:
    shown = run_regfs("cache", "stats", "--json", "--cache-dir", str(cache))
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)  # type: ignore[no-any-return]


def cached_share(cache: Path, layer: str) -> float:
    found = [each["cached"] for each in stats(cache)["layers"] if each["digest"] == layer]  # type: ignore[attr-defined]
    return max(found, default=0.0)  # type: ignore[no-any-return]


def files_under(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes()
            for path in root.rglob("*") if path.is_file()}  # fmt: skip


def read_pinned_offline(cache: Path, where: Path, pinning: Pinning) -> None:
    """With the registry away, a new mount reads every file of the pinned image, by tag."""
    mount = mount_on(cache, where)
    mount.allow_log(*UNREACHABLE)
    try:
        assert files_under(mount / pinning.host / "pinned/app/1/rootfs") == PINNED
    finally:
        mount.close()


def test_a_pinned_image_outlives_eviction_and_the_registry_until_unpinned(
    tmp_path: Path, pinning: Pinning, registry_back: Registry
) -> None:
    cache = tmp_path / "cache"
    done = run_regfs("prefetch", "--pin", "--cache-dir", str(cache), "--cache-size", SIZE,
                     pinning.image, timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"pinned {pinning.image}: sha256:" in done.stdout
    (pin,) = stats(cache)["pins"]  # type: ignore[misc]
    assert pin["reference"] == pinning.image and pin["bytes"] > 24 << 20
    assert pin["pieces_missing"] == 0 and pin["layers_not_indexed"] == 0
    fill(cache, tmp_path / "fill", pinning.host)
    assert cached_share(cache, pinning.layer("filler/0")) < 1.0  # evicted: the cache is full
    assert sum(stats(cache)["sizes"].values()) <= 64 << 20  # type: ignore[attr-defined]
    assert cached_share(cache, pinning.layer("pinned/app")) == 1.0
    registry_back.kill()
    read_pinned_offline(cache, tmp_path / "offline", pinning)
    registry_back.start()
    released = run_regfs("cache", "unpin", "--cache-dir", str(cache), pinning.image)
    assert released.returncode == 0, released.stderr
    assert released.stdout.startswith(f"unpinned {pinning.image} (sha256:")
    assert stats(cache)["pins"] == []
    fill(cache, tmp_path / "fill-again", pinning.host)
    assert cached_share(cache, pinning.layer("pinned/app")) < 1.0  # evicted as any other


def test_cache_pin_with_the_registry_away_keeps_what_a_mount_read(
    tmp_path: Path, pinning: Pinning, registry_back: Registry
) -> None:
    """``regfs cache pin`` asks no registry; another process's eviction (``cache prune``)
    then leaves the image, and a mount with the registry away reads all of it."""
    cache = tmp_path / "cache"
    first = mount_on(cache, tmp_path / "first")
    try:
        assert (first / pinning.host / "pinned/app/1/rootfs/etc/motd").read_bytes() == (
            PINNED["etc/motd"]
        )
        assert json.loads((first / pinning.host / "pinned/app/1/config").read_bytes())
    finally:
        first.close()
    registry_back.kill()
    pinned = run_regfs("cache", "pin", "--cache-dir", str(cache), "--cache-size", SIZE,
                       pinning.image)  # fmt: skip
    assert pinned.returncode == 0, pinned.stdout + pinned.stderr
    assert "not in the cache" not in pinned.stdout
    pruned = run_regfs("cache", "prune", "--json", "--max-size", "1M", "--cache-dir", str(cache))
    assert pruned.returncode == 0, pruned.stderr
    assert json.loads(pruned.stdout)["after"] > 24 << 20  # all but the pin went
    read_pinned_offline(cache, tmp_path / "offline", pinning)


def test_pinning_more_than_fits_fails_before_fetching_and_pins_nothing(
    tmp_path: Path, pinning: Pinning
) -> None:
    """24 MiB pinned, then 28 MiB more: over the 51.2 MiB the pins may hold of 64 MiB."""
    cache = tmp_path / "cache"
    first = run_regfs("prefetch", "--pin", "--quiet", "--cache-dir", str(cache),
                      "--cache-size", SIZE, pinning.image, timeout=180)  # fmt: skip
    assert first.returncode == 0, first.stderr
    before = stats(cache)["pins"]
    refused = run_regfs("prefetch", "--pin", "--cache-dir", str(cache), "--cache-size", SIZE,
                        f"{pinning.host}/filler/0:1", timeout=180)  # fmt: skip
    assert refused.returncode == 1
    message = refused.stderr.strip()
    assert message.startswith(f"regfs: cannot pin {pinning.host}/filler/0:1: it needs 28.")
    assert "beside the 24." in message and "other pins hold" in message
    assert "at most 51.2 MiB (80% of --cache-size 64.0 MiB); nothing was pinned" in message
    assert refused.stdout == ""  # no layer was fetched, none reported
    assert stats(cache)["pins"] == before
    assert cached_share(cache, pinning.layer("filler/0")) == 0.0  # nothing of it fetched
    assert not list((cache / "indexes").glob(pinning.layer("filler/0").replace(":", "-") + "*"))
