"""``locks/`` holds a file only while a layer is being downloaded: its holder removes it,
a startup sweeps what killed processes left, and neither takes a lock from anyone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from regfs.cache import locks
from regfs.cache.chunks import ChunkCache
from regfs.cache.layout import CacheLayout
from regfs.domain.digest import Digest
from regfs.domain.manifest import Descriptor
from regfs.layers.download_lock import file_lock
from regfs.layers.layer_ref import LayerRef
from regfs.layers.layer_store import LayerStore
from regfs.layers.mount_cache import open_mount_cache
from tests.support.fake_transport import NO_CLIENT

LAYERS = 50


def layer(number: int) -> LayerRef:
    digest = Digest.of(b"layer %d" % number)
    media_type = "application/vnd.oci.image.layer.v1.tar+gzip"
    return LayerRef("127.0.0.1:5000", "app", Descriptor(media_type, digest, 1000))


def layer_store(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> LayerStore:
    """A layer store whose first passes (under their lock, as ever) write a 64 KiB index
    instead of downloading anything."""
    store = LayerStore(NO_CLIENT, open_mount_cache(NO_CLIENT, cache_dir, 1 << 30))  # type: ignore[arg-type]

    async def first_pass(layer: LayerRef) -> None:
        assert os.listdir(cache_dir / "locks") == [f"{layer.digest.dir_name}.lock"]
        store._files.whole(layer)[0].write_bytes(b"i" * (64 << 10))

    monkeypatch.setattr(store._builders, "_whole", first_pass)
    return store


async def test_layers_fetched_then_evicted_leave_no_lock_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = layer_store(tmp_path, monkeypatch)
    for number in range(LAYERS):
        await store._builders.whole_once(layer(number))
    ChunkCache(CacheLayout(tmp_path), 1).evict()  # as `regfs cache prune` would
    assert os.listdir(tmp_path / "indexes") == []
    assert os.listdir(tmp_path / "locks") == []


async def test_lock_files_left_by_killed_processes_go_at_startup(tmp_path: Path) -> None:
    """Files of layers with an index or without one, as a regfs killed mid-download or
    one that kept every lock file leaves them; a lock held meanwhile stays."""
    lock_dir = tmp_path / "locks"
    lock_dir.mkdir()
    for number in range(LAYERS):
        (lock_dir / f"{layer(number).digest.dir_name}.lock").touch()
    held = lock_dir / f"{layer(0).digest.dir_name}.lock"
    async with file_lock(held):  # another descriptor: flock tells it from the sweep's
        LayerStore(NO_CLIENT, open_mount_cache(NO_CLIENT, tmp_path, 1 << 30))  # type: ignore[arg-type]
        assert os.listdir(lock_dir) == [held.name]
    assert os.listdir(lock_dir) == []  # its holder removes it


def test_a_lock_taken_on_a_file_removed_meanwhile_counts_for_nothing(tmp_path: Path) -> None:
    """A taker that opened the lock file before it was removed, and locks it after, must
    not think it holds the layer's lock: a newcomer created and locked a new file at the
    path. A sweep that opened the old file must leave the new one alone too."""
    path = tmp_path / "sha256-ab.lock"
    first = locks.try_lock(path)
    assert first is not None
    early = os.open(path, os.O_RDONLY)  # a taker or a sweep: opened, not locked yet
    try:
        locks.release(first, path)
        newcomer = locks.try_lock(path)
        assert newcomer is not None  # a new file, locked
        assert not locks._lock(early, path)  # its flock succeeds, but on the old file
        assert locks.sweep(tmp_path) == 0 and path.exists()
        locks.release(newcomer, path)
        assert not path.exists()
    finally:
        os.close(early)
