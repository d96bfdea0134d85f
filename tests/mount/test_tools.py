"""The commands around the mount: ``regfs prefetch`` and ``regfs cache``, run as a user runs
them (the installed CLI, the real registry), with and without a mount on the same cache."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mount.conftest import Layered
from tests.support import images
from tests.support.mount import Installation, Mount, clean_environment, run_regfs
from tests.support.net import wait_until
from tests.support.proxy import CountingProxy

pytestmark = pytest.mark.mount


@pytest.fixture
def fresh(layered_proxy: CountingProxy) -> Iterator[CountingProxy]:
    proxy = layered_proxy
    proxy.reset()
    yield proxy
    proxy.slow.clear()


def layers_of(layered: Layered) -> list[dict[str, object]]:
    body = images.get_manifest(layered.registry.url, "layered/oci", "1")[0]
    return json.loads(body)["layers"]  # type: ignore[no-any-return]


def config_of(layered: Layered) -> dict[str, object]:
    body = images.get_manifest(layered.registry.url, "layered/oci", "1")[0]
    return json.loads(body)["config"]  # type: ignore[no-any-return]


def test_prefetch_caches_an_image_a_mount_then_reads_without_fetching(
    tmp_path: Path, layered: Layered, fresh: CountingProxy
) -> None:
    cache = tmp_path / "cache"
    done = run_regfs("prefetch", "--cache-dir", str(cache), f"{fresh.host}/layered/oci:1",
                     timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == len(layers_of(layered))
    assert all("cached and verified" in line for line in lines), lines
    stats = json.loads(run_regfs("cache", "stats", "--json", "--cache-dir", str(cache)).stdout)
    assert {layer["cached"] for layer in stats["layers"]} == {1.0}
    fresh.reset()
    mount = Mount(tmp_path / "mnt", "--cache-dir", str(cache))
    try:
        rootfs = mount / fresh.host / "layered/oci/1/rootfs"
        big = (rootfs / "regfs-test/big.bin").read_bytes()
        assert big == (layered.oracle_rootfs / "regfs-test/big.bin").read_bytes()
    finally:
        mount.close()
    assert fresh.blob_bytes() - fresh.blob_bytes(str(json.loads(
        images.get_manifest(layered.registry.url, "layered/oci", "1")[0])["config"]["digest"]
    )) == 0  # fmt: skip
    image = ["--cache-dir", str(cache), "--image", f"{fresh.host}/layered/oci:1"]
    stats = json.loads(run_regfs("cache", "stats", "--json", *image).stdout)
    assert stats["image"] == {"layers": len(layers_of(layered)), "cached": 1.0}
    assert run_regfs("cache", "prune", *image).returncode == 0
    stats = json.loads(run_regfs("cache", "stats", "--json", *image).stdout)
    assert stats["image"]["cached"] == 0.0 and stats["layers"] == []


def test_prefetch_of_a_layer_dir_under_a_mount_fetches_that_layer(
    tmp_path: Path, layered: Layered, fresh: CountingProxy
) -> None:
    cache = tmp_path / "cache"
    mount = Mount(tmp_path / "mnt", "--cache-dir", str(cache))
    try:
        layer_dir = mount / fresh.host / "layered/oci/1/1"
        done = run_regfs("prefetch", "--cache-dir", str(cache), str(layer_dir), timeout=180)
        assert done.returncode == 0, done.stderr
        assert len(done.stdout.splitlines()) == 1 and " layer 1: cached" in done.stdout
        digests = [str(layer["digest"]) for layer in layers_of(layered)]
        config = config_of(layered)  # kept too, for a mount with the registry away
        layer_bytes = fresh.blob_bytes(digests[1])
        assert layer_bytes > 0
        assert fresh.blob_bytes() - layer_bytes in (0, config["size"])
        fresh.reset()
        assert (layer_dir / "etc/issue").read_text() == "regfs layered image\n"
        assert fresh.blob_bytes() == 0  # the mount took the prefetched index and chunks
    finally:
        mount.close()


def test_prefetch_and_a_mount_reading_the_same_layer_download_it_once(
    tmp_path: Path, layered: Layered, fresh: CountingProxy
) -> None:
    digest = str(layers_of(layered)[1]["digest"])
    blob_path = f"/v2/layered/oci/blobs/{digest}"
    fresh.slow.append((blob_path, 2.0))  # the download takes long enough to meet
    cache = tmp_path / "cache"
    mount = Mount(tmp_path / "mnt", "--cache-dir", str(cache))
    try:
        layer_dir = mount / fresh.host / "layered/oci/1/1"
        prefetching = subprocess.Popen(
            [str(Installation.regfs()), "prefetch", "-q", "--cache-dir", str(cache),
             f"{fresh.host}/layered/oci:1"],
            env=clean_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        wait_until(lambda: fresh.requests_by_path[blob_path] >= 1, 30, "the prefetch to ask")
        assert (layer_dir / "etc/issue").read_text() == "regfs layered image\n"
        out, err = prefetching.communicate(timeout=180)
        assert prefetching.returncode == 0, err
        assert out == ""  # --quiet
    finally:
        mount.close()
    assert fresh.whole_blob_gets[blob_path] == 1
    assert os.listdir(cache / "locks") == []  # each went with its download


def test_prefetch_of_what_does_not_exist_fails(tmp_path: Path, fresh: CountingProxy) -> None:
    done = run_regfs("prefetch", "--cache-dir", str(tmp_path / "cache"),
                     f"{fresh.host}/layered/nothing:1")  # fmt: skip
    assert done.returncode == 1
    assert "layered/nothing" in done.stderr


def test_cache_verify_removes_damaged_chunks_and_indexes_and_prune_keeps_a_mount_reading(
    tmp_path: Path, layered: Layered, fresh: CountingProxy
) -> None:
    cache = tmp_path / "cache"
    mount = Mount(tmp_path / "mnt", "--cache-dir", str(cache))
    try:
        big = mount / fresh.host / "layered/oci/1/rootfs/regfs-test/big.bin"
        expected = (layered.oracle_rootfs / "regfs-test/big.bin").read_bytes()
        assert big.read_bytes() == expected
        # the mount indexes the image's other layers behind: a chunk it writes again
        # would undo the damage below
        wait_until(lambda: not any((cache / "tmp").iterdir()), 60, "the layers indexed behind")
        chunk = sorted(p for p in (cache / "chunks").rglob("*") if p.is_file())[0]
        data = bytearray(chunk.read_bytes())
        data[100] ^= 0xFF
        chunk.write_bytes(data)
        index = sorted((cache / "indexes").glob("sha256-*.sqlite"))[0]
        changed = bytearray(index.read_bytes())
        changed[len(changed) // 2] ^= 0xFF  # a new file: the mount reads the one it has open
        index.with_name("changed").write_bytes(changed)
        os.replace(index.with_name("changed"), index)
        checked = run_regfs("cache", "verify", "--cache-dir", str(cache))
        assert checked.returncode == 1, checked.stdout + checked.stderr
        assert f"removed {chunk.name}" in checked.stdout
        assert f"removed {index.name}" in checked.stdout and not index.exists()
        assert run_regfs("cache", "verify", "--cache-dir", str(cache)).returncode == 0
        pruned = run_regfs("cache", "prune", "--json", "--max-size", "1M", "--cache-dir",
                           str(cache))  # fmt: skip
        assert pruned.returncode == 0, pruned.stderr
        sizes = json.loads(pruned.stdout)
        assert sizes["after"] < sizes["before"]
        stats = run_regfs("cache", "stats", "--cache-dir", str(cache))
        assert f"mount       {mount.path}: hit rate" in stats.stdout
        fresh.reset()
        rootfs = big.parent.parent
        for name in ("usr/bin/bash", "usr/bin/dpkg", "etc/os-release"):  # layer 0, not read yet
            assert (rootfs / name).read_bytes() == (layered.oracle_rootfs / name).read_bytes()
        assert fresh.blob_bytes() > 0  # pruned chunks, fetched again
    finally:
        mount.close()
