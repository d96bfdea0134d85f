"""Directory listings through ``Operations.readdir``: paged as the kernel's buffer allows,
from stable offsets, with names as bytes. In-memory registry, autojump clock."""

from __future__ import annotations

import os
import stat
import tarfile

import pyfuse3
import pytest
import trio

from regfs.fuse.operations import DOTS, LISTINGS_PAGED_AT_ONCE
from regfs.tree.inodes import ROOT_INODE
from tests.support.crafted import directory, gzip_layer, member
from tests.support.fuse_harness import HOST, Kernel
from tests.support.memory_registry import MemoryRegistry

LAYER = gzip_layer(member("file", b"x"))

Page = list[tuple[bytes, pyfuse3.EntryAttributes, int]]


def names(*pages: Page) -> list[bytes]:
    """The names of ``pages`` but ``.`` and ``..``."""
    return [name for page in pages for name, _, _ in page if name not in DOTS]


def tagged(registry: MemoryRegistry, repository: str, tags: list[str]) -> None:
    """``repository`` with one image under each of ``tags``."""
    digest = registry.push(repository, tags[0], [LAYER])
    registry.repositories[repository].tags |= dict.fromkeys(tags, digest)


async def test_a_listing_larger_than_a_reply_continues_from_its_offset(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel
) -> None:
    tags = [f"t{number:03}" for number in range(150)]
    tagged(registry, "many", tags)
    inode = await kernel.inode(f"{HOST}/many")
    pages: list[Page] = []
    while page := await kernel.readdir(inode, pages[-1][-1][2] if pages else 0, room=64):
        pages.append(page)
    assert [len(page) for page in pages] == [64, 64, 24]
    assert [name for name, _, _ in pages[0][:2]] == [b".", b".."]
    assert names(*pages) == [tag.encode() for tag in tags]
    assert [offset for page in pages for _, _, offset in page] == list(range(1, 153))
    assert registry.requests["GET tags many list"] == 1  # one listing, kept while paged
    name, attributes, _ = pages[1][5]
    assert (await kernel.lookup(f"{HOST}/many/{name.decode()}")).st_ino == attributes.st_ino


@pytest.mark.parametrize("metadata_ttl", [0.0])
async def test_a_listing_is_kept_while_paged_and_a_rewind_takes_a_new_one(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel
) -> None:
    """Tags pushed while ``ls`` pages through a repository: the offsets it holds still
    mean the listing it started, so nothing is shown twice or skipped."""
    before = [f"b{number:02}" for number in range(20)]
    tagged(registry, "app", before)
    inode = await kernel.inode(f"{HOST}/app")
    first = await kernel.readdir(inode, 0, room=10)
    tagged(registry, "app", ["a0", "a1", "a2"])
    rest = await kernel.readdir(inode, 10)
    assert names(first, rest) == [tag.encode() for tag in before]
    assert names(await kernel.readdir(inode, 0))[:4] == [b"a0", b"a1", b"a2", b"b00"]


@pytest.mark.parametrize("metadata_ttl", [0.0])
async def test_a_reader_whose_listing_was_dropped_continues_in_a_new_one(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel
) -> None:
    """Listings are kept for the ``LISTINGS_PAGED_AT_ONCE`` directories paged most
    recently; a reader of an older one goes on from its offset in a listing taken now."""
    tagged(registry, "app", [f"b{number:02}" for number in range(20)])
    inode = await kernel.inode(f"{HOST}/app")
    first = await kernel.readdir(inode, 0, room=10)
    for number in range(LISTINGS_PAGED_AT_ONCE):
        tagged(registry, f"r{number:02}", ["1", "2"])
        assert len(await kernel.readdir(await kernel.inode(f"{HOST}/r{number:02}"), room=1)) == 1
    tagged(registry, "app", ["a0", "a1", "a2"])
    rest = await kernel.readdir(inode, 10)
    now = names(await kernel.readdir(inode, 0))
    assert names(rest) == now[10 - len(DOTS) :] and len(names(first, rest)) == len(now)


async def test_an_entry_the_reply_had_no_room_for_takes_no_inode(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel
) -> None:
    tagged(registry, "app", ["1", "2", "3"])
    inode = await kernel.inode(f"{HOST}/app")
    known = len(kernel.operations.inodes)
    assert names(await kernel.readdir(inode, 0, room=3)) == [b"1"]  # after . and ..
    assert len(kernel.operations.inodes) == known + 1


LATIN_1_DIR = b"\xff\xfe dir"
LATIN_1_FILE = b"caf\xe9"
UTF_8_FILE = "ünïcödé ✓".encode()


async def test_names_that_are_not_utf_8_round_trip_as_bytes(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel
) -> None:
    """A tar stores names as bytes; so does the kernel: any byte string goes through
    (decoded with surrogateescape inside regfs), in layer dirs and ``rootfs/`` alike."""
    layer = gzip_layer(
        directory(os.fsdecode(LATIN_1_DIR + b"/")),
        member(os.fsdecode(LATIN_1_DIR + b"/" + LATIN_1_FILE), b"latin-1\n"),
        member(os.fsdecode(UTF_8_FILE), b"utf-8\n"),
        member("link", None, type=tarfile.SYMTYPE, linkname=os.fsdecode(LATIN_1_FILE)),
        tar_format=tarfile.GNU_FORMAT,  # names as raw bytes, no PAX header
    )
    digest = registry.push("app", "1", [layer])
    image = f"{HOST}/app/{digest.replace(':', '-')}".encode()
    for top in (b"0", b"rootfs"):
        here = image + b"/" + top
        assert sorted(await kernel.listdir(here)) == sorted([LATIN_1_DIR, UTF_8_FILE, b"link"])
        assert await kernel.listdir(here + b"/" + LATIN_1_DIR) == [LATIN_1_FILE]
        assert await kernel.read(here + b"/" + LATIN_1_DIR + b"/" + LATIN_1_FILE) == b"latin-1\n"
        assert await kernel.read(here + b"/" + UTF_8_FILE) == b"utf-8\n"
        assert await kernel.readlink(here + b"/link") == LATIN_1_FILE


@pytest.mark.parametrize("metadata_ttl", [0.0])
async def test_the_end_of_a_listing_is_the_end_of_the_listing_paged(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel
) -> None:
    """getdents asks again at the offset after the last entry, and ends at an empty
    reply: a tag pushed in between must not show ``b2`` a second time."""
    tagged(registry, "app", ["b0", "b1", "b2"])
    inode = await kernel.inode(f"{HOST}/app")
    assert names(await kernel.readdir(inode, 0)) == [b"b0", b"b1", b"b2"]
    tagged(registry, "app", ["a0"])
    assert names(await kernel.readdir(inode, 5)) == []


@pytest.mark.parametrize("metadata_ttl", [0.0])
async def test_two_readers_paging_one_listing_each_see_every_name_once(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel
) -> None:
    """The docstring's promise: one kept listing serves several readers at once, and
    offsets stay valid however the registry changes meanwhile."""
    tags = [f"b{number:02}" for number in range(25)]
    tagged(registry, "app", tags)
    inode = await kernel.inode(f"{HOST}/app")
    first: Page = []
    second: Page = []
    for offset in (0, 10, 20):
        first += await kernel.readdir(inode, offset, room=10)
        if offset == 20:  # the first reader is through; the second is not yet
            tagged(registry, "app", ["a0", "a1", "a2"])
        second += await kernel.readdir(inode, offset, room=10)
    assert names(first) == names(second) == [tag.encode() for tag in tags]


async def test_a_listing_starts_with_dot_and_dot_dot_naming_the_dir_and_its_parent(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel
) -> None:
    """As every local filesystem lists them (``ls -a``, a tree compared with ``diff -r``
    or by a scanner), the root's ``..`` being itself; they take no inode reference."""
    digest = registry.push("app", "1", [gzip_layer(directory("etc/"), member("etc/a", b"a"))])
    etc = f"{HOST}/app/{digest.replace(':', '-')}/rootfs/etc"
    expected = {
        "": (ROOT_INODE, ROOT_INODE),
        HOST: (await kernel.inode(HOST), ROOT_INODE),
        etc: (await kernel.inode(etc), await kernel.inode(etc.rsplit("/", 1)[0])),
    }
    for path, (here, parent) in expected.items():
        known = len(kernel.operations.inodes)
        dots = await kernel.readdir(here, 0, room=2)
        assert [(name, attributes.st_ino, offset) for name, attributes, offset in dots] == [
            (b".", here, 1),
            (b"..", parent, 2),
        ], path
        assert all(stat.S_ISDIR(attributes.st_mode) for _, attributes, _ in dots)
        assert len(kernel.operations.inodes) == known
    assert names(await kernel.readdir(expected[etc][0], 1)) == [b"a"]  # on from ``.``
