"""The chunk cache's policy and safety, and random access through checkpoints."""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
import trio

from regfs.cache.chunks import ChunkCache, load_verified
from regfs.cache.layout import CacheLayout
from regfs.layers.formats.entries import ROOT_ID
from regfs.layers.index.build import build_index
from regfs.layers.index.layer_index import LayerIndex
from regfs.layers.layer_store import LayerStore
from regfs.layers.mount_cache import open_mount_cache
from regfs.layers.open_indexes import _ClosingLRU
from tests.support.crafted import member, tar_of, zeros_layer
from tests.support.fake_transport import NO_CLIENT


def put(cache: ChunkCache, data: bytes) -> bytes:
    digest = hashlib.sha256(data).digest()
    cache.put(digest, data)
    return digest


def test_chunks_round_trip_and_damage_is_detected(tmp_path: Path) -> None:
    cache = ChunkCache(CacheLayout(tmp_path), 1 << 30)
    digest = put(cache, b"chunk")
    assert load_verified(cache, digest) == b"chunk"
    path = next(p for p in (tmp_path / "chunks").rglob("*") if p.is_file())
    path.write_bytes(b"chunK")
    assert load_verified(cache, digest) is None and not path.exists()


def test_an_unreadable_cache_entry_is_logged_and_fetched_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = ChunkCache(CacheLayout(tmp_path), 1 << 30)
    digest = put(cache, b"chunk")
    path = next(p for p in (tmp_path / "chunks").rglob("*") if p.is_file())
    path.unlink()
    path.mkdir()  # e.g. a damaged file system: reading fails with something else than ENOENT
    with caplog.at_level(logging.WARNING):
        assert load_verified(cache, digest) is None
    assert f"chunk {digest.hex()} unreadable in the cache" in caplog.text
    caplog.clear()
    assert load_verified(cache, hashlib.sha256(b"absent").digest()) is None
    assert not caplog.text  # merely not cached: nothing to say


def test_an_unreadable_layer_index_is_logged_and_built_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    damaged = tmp_path / "sha256-x.sqlite"
    damaged.write_bytes(b"not a database" * 100)
    with caplog.at_level(logging.WARNING):
        assert LayerIndex.open(damaged) is None
    assert "sha256-x.sqlite: layer index unreadable" in caplog.text


def test_eviction_removes_least_recently_used_first(tmp_path: Path) -> None:
    cache = ChunkCache(CacheLayout(tmp_path), 13_000)
    digests = []
    for number in range(4):
        digests.append(put(cache, bytes([number]) * 3000))
        os.utime(cache._path(digests[-1]), (time.time() - 100 + number, time.time() - 100 + number))
    assert load_verified(cache, digests[0]) is not None  # touched: now the most recent
    put(cache, b"x" * 3000)  # 15 000 bytes, over 13 000: evict down to 90 % of it
    assert cache.usage() <= 11_700
    assert load_verified(cache, digests[0]) is not None
    assert load_verified(cache, digests[1]) is None and load_verified(cache, digests[2]) is None


def test_processes_sharing_a_cache_dir_keep_it_within_the_bound(tmp_path: Path) -> None:
    """Two mounts (or a mount and ``regfs prefetch``) on one cache dir: each measures the
    dir again after counting a tenth of the bound, so what the other wrote counts too
    (each once counted its own writes only, and the two filled 160 % of the bound)."""
    bound = 100_000
    first = ChunkCache(CacheLayout(tmp_path), bound)
    second = ChunkCache(CacheLayout(tmp_path), bound)
    for number in range(16):  # 16 times 10 000 bytes, alternately
        put(first if number % 2 else second, bytes([number]) * 10_000)
    stored = sum(path.stat().st_size for path in tmp_path.rglob("*") if path.is_file())
    assert stored <= bound


def test_the_bound_covers_indexes_and_blobs_being_indexed(tmp_path: Path) -> None:
    """Least recently used first, chunks and unused indexes alike; a blob being indexed
    counts but stays, and so does an index this process has open."""
    (tmp_path / "indexes").mkdir()
    (tmp_path / "tmp").mkdir()
    old_index = tmp_path / "indexes/sha256-old.sqlite"
    open_index = tmp_path / "indexes/sha256-open.sqlite"
    downloading = tmp_path / "tmp/abc.1.0123abcd"
    for path in (old_index, open_index, downloading):
        path.write_bytes(b"i" * 4000)
        os.utime(path, (1, 1))  # older than any chunk
    cache = ChunkCache(CacheLayout(tmp_path), 20_000, in_use=lambda: {open_index})
    digests = [put(cache, bytes([n]) * 3000) for n in range(3)]
    assert not old_index.exists()  # 12 000 + 9 000 > 20 000: the oldest unused file went
    assert open_index.exists() and downloading.exists()
    assert all(load_verified(cache, digest) is not None for digest in digests)
    assert cache.usage() <= 20_000


def test_stale_temporaries_are_cleared(tmp_path: Path) -> None:
    cache = ChunkCache(CacheLayout(tmp_path), 1 << 30)
    digest = put(cache, b"a")
    stale = cache._path(digest).with_name(".leftover.tmp")
    stale.write_bytes(b"partial")
    os.utime(stale, (0, 0))
    gone = cache._path(digest).with_name(f".abc.{_exited_pid()}.0123abcd.tmp")
    gone.write_bytes(b"partial, young, its writer killed")
    alive = cache._path(digest).with_name(f".abc.{os.getpid()}.0123abcd.tmp")
    alive.write_bytes(b"being written right now")
    cache.evict()
    assert not stale.exists() and not gone.exists() and alive.exists()
    assert load_verified(cache, digest) == b"a"


def _exited_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_cache_writes_never_fail_a_read(tmp_path: Path) -> None:
    cache = ChunkCache(CacheLayout(tmp_path), 1 << 30)
    # a bucket that is a file: writes fail (as on a full disk), and root ignores modes
    cache._path(hashlib.sha256(b"z").digest()).parent.write_bytes(b"not a directory")
    put(cache, b"z")  # logs a warning, raises nothing
    assert load_verified(cache, hashlib.sha256(b"z").digest()) is None


def test_the_index_of_a_decompression_bomb_is_small(tmp_path: Path) -> None:
    """256 MiB of zeros in 256 KiB of gzip: its windows compress away with it."""
    (tmp_path / "blob").write_bytes(zeros_layer(256 << 20))
    build_index(
        tmp_path / "blob",
        tmp_path / "index",
        "sha256:x",
        ChunkCache(CacheLayout(tmp_path), 1 << 30),
    )
    assert (tmp_path / "index").stat().st_size < 256 << 10


def small_index(directory: Path, name: str) -> Path:
    (directory / f"{name}.tar").write_bytes(tar_of([member(name, b"x")], tarfile.PAX_FORMAT))
    path = directory / f"{name}.sqlite"
    build_index(
        directory / f"{name}.tar",
        path,
        f"sha256:{name}",
        ChunkCache(CacheLayout(directory), 1 << 30),
    )
    return path


def test_a_mount_keeps_a_bounded_number_of_indexes_open(tmp_path: Path) -> None:
    """Each open index holds a file descriptor: past the bound the least recently used is
    closed, and opened again when next asked."""
    opened: list[LayerIndex] = []
    lru = _ClosingLRU(2)
    indexes = []
    for name in ("a", "b", "c"):
        index = LayerIndex.open(small_index(tmp_path, name))
        assert index is not None
        index.on_open = opened.append
        lru[index.path] = index
        indexes.append(index)
    assert [index.is_open for index in indexes] == [False, True, True]
    assert indexes[0].child(ROOT_ID, b"a") is not None  # opened again on use
    assert indexes[0].is_open and opened == [indexes[0]]
    assert trio.run(indexes[0].children, ROOT_ID)[0].name == b"a"


def test_an_index_closed_under_a_query_in_a_thread_opens_again(tmp_path: Path) -> None:
    """The owner may close an index while a worker thread queries it: the query starts over
    on a fresh connection; a query that fails on an open connection is a bug, raised."""
    index = LayerIndex.open(small_index(tmp_path, "a"))
    assert index is not None
    closed = []

    def close_first(db: sqlite3.Connection) -> int:
        if not closed:
            closed.append(db)
            index.close()
        return int(db.execute("SELECT count(*) FROM entries").fetchone()[0])

    assert trio.run(index._in_thread, "count", close_first) == 2
    assert index.is_open
    with pytest.raises(sqlite3.ProgrammingError):
        trio.run(index._in_thread, "bad", lambda db: db.execute("SELECT ?", ()).fetchone())


def test_indexes_in_use_or_being_built_are_never_evicted(tmp_path: Path) -> None:
    store = LayerStore(NO_CLIENT, open_mount_cache(NO_CLIENT, tmp_path, 64 << 20))  # type: ignore[arg-type]
    building = tmp_path / "indexes" / "building.sqlite"
    used = tmp_path / "indexes" / "used.sqlite"
    for path in (building, used):
        path.write_bytes(b"x" * (40 << 20))
    index = LayerIndex.open(small_index(tmp_path, "u"))
    assert index is not None
    index.path = used
    with store._indexes.building(building):
        store._indexes.add(index)
        store._chunks.evict()
        assert building.exists() and used.exists()
    del index
    store._chunks.evict()
    assert not building.exists()  # evictable again (the older of the two goes first)
