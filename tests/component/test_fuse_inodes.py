"""Which entries the kernel sees as one inode: a directory is one path, never two.

The kernel keeps one dentry per directory inode: a directory inode found at a second path
has that dentry moved there (a shell whose cwd was below the first path finds itself, and
its ``..``, in the second), and overlayfs refuses two lowerdirs that are one inode. Layer
blobs and images are shared (one layer twice in an image, a base layer in many images,
an index dir showing its platform's image), so a directory's inode is made from its path;
files may share one, as hard links do, and a hard-linked file keeps its number once the
kernel forgets it. In-memory registry, real layer store."""

from __future__ import annotations

import tarfile

import trio

from tests.support.crafted import directory, gzip_layer, member
from tests.support.fuse_harness import HOST, Kernel
from tests.support.memory_registry import MemoryRegistry

BASE = gzip_layer(directory("./"), directory("etc/"), member("etc/base", b"base\n"))
APP = gzip_layer(directory("etc/"), member("etc/app", b"app\n"))


def digest_dir(repository: str, digest: str) -> str:
    return f"{HOST}/{repository}/{digest.replace(':', '-')}"


async def directory_inodes(kernel: Kernel, paths: list[str]) -> list[int]:
    return [await kernel.inode(path) for path in paths]


async def test_a_layer_twice_in_an_image_is_two_dirs(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel
) -> None:
    image = digest_dir("dup", registry.push("dup", "1", [BASE, APP, BASE]))
    paths = [f"{image}/{position}{below}" for below in ("", "/etc") for position in (0, 2)]
    inodes = await directory_inodes(kernel, paths)
    assert len(set(inodes)) == len(paths)
    assert await kernel.read(f"{image}/2/etc/base") == b"base\n"


async def test_a_layer_shared_by_two_images_is_a_dir_in_each(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel
) -> None:
    first = digest_dir("app", registry.push("app", "a", [BASE]))
    second = digest_dir("app", registry.push("app", "b", [BASE, APP]))
    paths = [f"{image}/0/etc" for image in (first, second)]
    assert len(set(await directory_inodes(kernel, paths))) == 2
    files = [await kernel.inode(f"{image}/0/etc/base") for image in (first, second)]
    assert files[0] == files[1]  # one file's bytes: the page cache keeps them once


async def test_an_index_dir_and_its_platform_s_image_dir_show_dirs_of_their_own(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel
) -> None:
    pushed = registry.push("multi", "amd64", [BASE, APP])
    image = digest_dir("multi", pushed)
    index = digest_dir("multi", registry.push_index("multi", "latest", {"linux/amd64": pushed}))
    paths = [
        f"{d}/{name}" for name in ("0", "0/etc", "rootfs", "rootfs/etc") for d in (image, index)
    ]
    assert len(set(await directory_inodes(kernel, paths))) == len(paths)
    for rootfs in (f"{image}/rootfs", f"{index}/rootfs"):  # a listing names its own dirs
        [(name, attributes, _)] = (await kernel.readdir(await kernel.inode(rootfs)))[2:]
        assert (name, attributes.st_ino) == (b"etc", await kernel.inode(f"{rootfs}/etc"))


async def test_a_hard_linked_file_keeps_its_inode_once_the_kernel_forgets_it(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel
) -> None:
    """``tar``, ``du`` and ``rsync -H`` match hard links by inode number: a walk that meets
    a second name after the kernel forgot the first (memory pressure) must see one file."""
    linked = gzip_layer(member("bin/gzip", b"gzip\n"),
                        member("bin/gunzip", None, type=tarfile.LNKTYPE, linkname="bin/gzip"),
                        member("bin/other", b"other\n"))  # fmt: skip
    image = digest_dir("links", registry.push("links", "1", [linked]))
    for where in (f"{image}/0", f"{image}/rootfs"):
        first = await kernel.inode(f"{where}/bin/gzip")
        await kernel.operations.forget([(first, 1)])
        assert await kernel.inode(f"{where}/bin/other") != first
        assert await kernel.inode(f"{where}/bin/gunzip") == first
