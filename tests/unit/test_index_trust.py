"""Index files in the cache dir are checked before they are used, and what is cached of
an index's answers belongs to that index alone."""

from __future__ import annotations

import logging
import os
import stat
import tarfile
from pathlib import Path

import pytest
import trio

from regfs.cache.chunks import ChunkCache
from regfs.cache.directory import UnsafeCacheDir, prepare_cache_dir, unsafe_because
from regfs.cache.layout import CacheLayout
from regfs.cache.memory import listings_lru
from regfs.layers.formats.entries import ROOT_ID
from regfs.layers.index.build import build_index
from regfs.layers.index.layer_index import LayerIndex, Listings
from regfs.layers.index.meta import ExpectedIndex
from tests.support.crafted import member, tar_of


def index_of(directory: Path, name: str, members: list[str], digest: str) -> Path:
    tar = directory / f"{name}.tar"
    tar.write_bytes(tar_of([member(path, b"x") for path in members], tarfile.PAX_FORMAT))
    path = directory / f"{name}.sqlite"
    build_index(tar, path, digest, ChunkCache(CacheLayout(directory), 1 << 30))
    return path


def test_an_index_is_used_for_the_layer_it_says_it_indexes(tmp_path: Path) -> None:
    path = index_of(tmp_path, "a", ["f"], "sha256:aa")
    size = (tmp_path / "a.tar").stat().st_size
    index = LayerIndex.open(path, expected=ExpectedIndex("sha256:aa", size, "blob"))
    assert index is not None and index.meta.built_from == "blob"


@pytest.mark.parametrize(
    ("expected", "reason"),
    [
        (ExpectedIndex("sha256:bb", None, "blob"), "it indexes sha256:aa"),
        (ExpectedIndex("sha256:aa", 1, "blob"), "it indexes a blob of 10240 bytes, not 1"),
        (ExpectedIndex("sha256:aa", None, "toc 1234"), "it was built from 'blob', not 'toc 1234'"),
    ],
)
def test_an_index_of_something_else_is_deleted_with_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, expected: ExpectedIndex, reason: str
) -> None:
    """A file put in a layer's place (a shared cache, a copy, a mistake) is not served."""
    path = index_of(tmp_path, "a", ["f"], "sha256:aa")
    with caplog.at_level(logging.WARNING):
        assert LayerIndex.open(path, expected=expected) is None
    assert not path.exists()
    (line,) = caplog.messages
    assert line == f"a.sqlite: not the index of {expected.digest} ({reason}): deleted, built again"


def test_listings_of_two_indexes_of_one_digest_stay_apart(tmp_path: Path) -> None:
    """One layer indexed twice (its blob, its TOC) numbers its entries twice: a listing
    kept for one must never answer for the other, though the mount shares the cache."""
    listings: Listings = listings_lru()
    first = index_of(tmp_path, "one", ["a/x"], "sha256:same")
    second = index_of(tmp_path, "two", ["0/z", "a/x"], "sha256:same")  # ids shifted by one
    one, two = LayerIndex.open(first, listings), LayerIndex.open(second, listings)
    assert one is not None and two is not None

    def names(index: LayerIndex, directory: bytes) -> list[bytes]:
        child = index.child(ROOT_ID, directory)
        assert child is not None
        return [entry.name for entry in trio.run(index.children, child.id)]

    assert names(one, b"a") == [b"x"]
    assert names(two, b"0") == [b"z"]
    assert names(two, b"a") == [b"x"]


def test_a_new_cache_dir_is_private(tmp_path: Path) -> None:
    directory = tmp_path / "new" / "cache"
    umask = os.umask(0o022)
    try:
        prepare_cache_dir(directory, allow_shared=False)
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert os.umask(0o022) == 0o077
    finally:
        os.umask(umask)


def test_a_cache_dir_that_cannot_be_made_is_said_as_one_that_cannot_be_written(
    tmp_path: Path,
) -> None:
    """troubleshooting.md's line, not the bare OSError of mkdir (as when ``~/.cache`` is
    on a read-only file system: the default cache dir is made at the first mount)."""
    (tmp_path / "file").write_text("")
    directory = tmp_path / "file" / "cache"
    with pytest.raises(OSError, match=f"cache dir {directory} cannot be written: Not a dir"):
        prepare_cache_dir(directory, allow_shared=False)


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o1777])
def test_a_cache_dir_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    directory = tmp_path / "cache"
    directory.mkdir()
    directory.chmod(mode)
    with pytest.raises(UnsafeCacheDir, match="is writable by"):
        prepare_cache_dir(directory, allow_shared=False)
    umask = os.umask(0o022)
    try:
        prepare_cache_dir(directory, allow_shared=True)  # shared on purpose
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(umask)


def test_a_part_owned_by_another_user_or_a_link_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    (directory / "indexes").mkdir(parents=True)
    os.chown(directory / "indexes", 4242, 4242)
    with pytest.raises(UnsafeCacheDir, match=r"indexes is owned by uid 4242"):
        prepare_cache_dir(directory, allow_shared=False)
    (directory / "chunks").symlink_to(tmp_path)
    assert unsafe_because(directory / "chunks", os.geteuid()) == "is a symbolic link"
    assert unsafe_because(directory / "absent", os.geteuid()) is None
