"""A layer's index file evicted by another process sharing the cache dir while this mount
has it closed (past ``OPEN_INDEXES``): built again as a first read would build it, never
the layer EIO until a remount (found by a review)."""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from pathlib import Path

import pyfuse3
import pytest
import trio

from tests.support.crafted import directory, gzip_layer, member
from tests.support.estargz_writer import estargz
from tests.support.fuse_harness import HOST, Kernel, readdir_reply
from tests.support.memory_registry import MemoryRegistry
from tests.support.store_tree import estargz_registry

MOTD = b"hello from the cache\n"
HOSTNAME = b"box\n"
FILES = [("etc/motd", MOTD), ("etc/hostname", HOSTNAME)]


def gzip_image() -> tuple[MemoryRegistry, str]:
    """A registry with ``app``, an image of one gzip layer (indexed from its whole blob),
    and the image's digest."""
    registry = MemoryRegistry()
    layer = gzip_layer(directory("etc/"), *(member(name, data) for name, data in FILES))
    return registry, registry.push("app", "1", [layer])


def estargz_image() -> tuple[MemoryRegistry, str]:
    """The same files in an eStargz layer (indexed from its TOC)."""
    registry = estargz_registry(*estargz(FILES, 64 << 10))
    (digest,) = registry.repositories["app"].manifests
    return registry, digest


@pytest.fixture(autouse=True)
def kernel_replies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pyfuse3, "readdir_reply", readdir_reply)


def digest_of_layer(registry: MemoryRegistry) -> str:
    """The digest of the image's one layer (its other blob is its config, much smaller)."""
    blobs = registry.repositories["app"].blobs
    return max(blobs, key=lambda digest: len(blobs[digest]))


def evicted_by_another_process(cache_dir: Path) -> None:
    """What another process's eviction leaves: no index file, no chunk."""
    for index in (cache_dir / "indexes").glob("*.sqlite"):
        index.unlink()
    for chunk in (cache_dir / "chunks").rglob("*"):
        if chunk.is_file():
            chunk.unlink()


@pytest.mark.parametrize("image", [gzip_image, estargz_image])
@pytest.mark.parametrize("where", ["rootfs", "0"])
async def test_a_closed_index_evicted_by_another_process_is_built_again(
    autojump_clock: trio.abc.Clock,
    tmp_path: Path,
    where: str,
    image: Callable[[], tuple[MemoryRegistry, str]],
) -> None:
    registry, digest = image()
    etc = f"{HOST}/app/{digest.replace(':', '-')}/{where}/etc"
    kernel = Kernel(registry, tmp_path)
    try:
        assert await kernel.read(f"{etc}/motd") == MOTD
        kernel.layers._indexes.close()  # as past OPEN_INDEXES: opened again when next asked
        evicted_by_another_process(tmp_path)
        assert await kernel.read(f"{etc}/motd") == MOTD
        assert await kernel.read(f"{etc}/hostname") == HOSTNAME
        assert sorted(await kernel.listdir(etc)) == [b"hostname", b"motd"]
    finally:
        kernel.close()


@pytest.mark.parametrize("image", [gzip_image, estargz_image])
async def test_an_open_index_or_chunks_evicted_by_another_process_still_serve(
    autojump_clock: trio.abc.Clock, tmp_path: Path, image: Callable[[], tuple[MemoryRegistry, str]]
) -> None:
    """An open index keeps its file's inode (SQLite holds it open); chunks evicted are
    fetched again and checked against the index's hashes."""
    registry, digest = image()
    etc = f"{HOST}/app/{digest.replace(':', '-')}/rootfs/etc"
    kernel = Kernel(registry, tmp_path)
    try:
        assert await kernel.read(f"{etc}/motd") == MOTD
        evicted_by_another_process(tmp_path)
        kernel.layers.pieces._memory.clear()  # nor kept in memory
        fetched = registry.blob_gets(digest_of_layer(registry))
        assert await kernel.read(f"{etc}/hostname") == HOSTNAME
        assert sorted(await kernel.listdir(etc)) == [b"hostname", b"motd"]
    finally:
        kernel.close()
    assert registry.blob_gets(digest_of_layer(registry)) > fetched


async def test_a_listing_that_meets_an_evicted_index_gives_no_entry_twice(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    """A listing kept in memory is given until an entry's attributes need the index (a
    hard link's count of names in ``rootfs/``): the page ends there, and the next one,
    asked again once the index is built again, goes on from there."""
    registry = MemoryRegistry()
    layer = gzip_layer(
        directory("etc/"), member("etc/a", b"linked"),
        member("etc/b", None, type=tarfile.LNKTYPE, linkname="etc/a"), member("etc/motd", MOTD),
    )  # fmt: skip
    etc = f"{HOST}/app/{registry.push('app', '1', [layer]).replace(':', '-')}/rootfs/etc"
    kernel = Kernel(registry, tmp_path)
    try:
        inode = await kernel.inode(etc)
        assert len(await kernel.readdir(inode, room=2)) == 2  # listed, no entry's stat yet
        kernel.layers._indexes.close()
        evicted_by_another_process(tmp_path)
        names: list[bytes] = []
        while page := await kernel.readdir(inode, len(names)):
            names += [name for name, _, _ in page]
        assert names == [b".", b"..", b"a", b"b", b"motd"]
    finally:
        kernel.close()
