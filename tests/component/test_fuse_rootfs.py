"""``rootfs/`` through ``Operations``: the layers merged with OCI whiteouts as an unpack
would, the root's attributes, and hard links counted by the names left visible.
In-memory registry, real layer store, autojump clock."""

from __future__ import annotations

import errno
import stat
import tarfile

import pyfuse3
import pytest
import trio

from regfs.fuse.operations import IMMUTABLE_TIMEOUT
from tests.support.crafted import directory, gzip_layer, member
from tests.support.fuse_harness import CONTEXT, HOST, Kernel
from tests.support.memory_registry import MemoryRegistry, sha256

BOTTOM_TIME, TOP_TIME = 1_600_000_000, 1_700_000_000
BOTTOM = gzip_layer(
    directory("./", mtime=BOTTOM_TIME),
    directory("etc/"),
    member("etc/passwd", b"root:x:0:0\n"),
    member("etc/gone", b"whited out\n"),
    directory("usr/share/doc/"),
    member("usr/share/doc/a", b"a\n"),
    member("usr/share/doc/b", b"b\n"),
    directory("opt/"),
    member("opt/x", b"under a file now\n"),
    member("var", b"a file, then a dir\n"),
    directory("hard/"),
    member("hard/a", b"linked\n"),
    member("hard/b", None, type=tarfile.LNKTYPE, linkname="hard/a"),
    member("hard/c", None, type=tarfile.LNKTYPE, linkname="hard/a"),
    directory("links/"),
    member("links/target", b"kept by its other name\n"),
    member("links/other", None, type=tarfile.LNKTYPE, linkname="links/target"),
)
TOP = gzip_layer(
    directory("./", mode=0o750, uid=7, gid=8, mtime=TOP_TIME),
    directory("etc/"),
    member("etc/.wh.gone", b""),
    directory("usr/share/doc/"),
    member("usr/share/doc/.wh..wh..opq", b""),
    member("usr/share/doc/new", b"new\n"),
    member("opt", b"a file where a dir was\n"),
    directory("var/"),
    member("var/inner", b"inside\n"),
    directory("hard/"),
    member("hard/.wh.c", b""),
    directory("links/"),
    member("links/.wh.target", b""),
)


@pytest.fixture
def rootfs(registry: MemoryRegistry) -> str:
    digest = registry.push("app", "1", [BOTTOM, TOP])
    return f"{HOST}/app/{digest.replace(':', '-')}/rootfs"


async def test_a_whiteout_hides_the_name_below(
    autojump_clock: trio.abc.Clock, kernel: Kernel, rootfs: str
) -> None:
    assert await kernel.listdir(f"{rootfs}/etc") == [b"passwd"]
    assert (await kernel.lookup(f"{rootfs}/etc/gone")).st_ino == 0  # a negative entry
    assert await kernel.read(f"{rootfs}/etc/passwd") == b"root:x:0:0\n"


async def test_an_opaque_dir_hides_everything_below_it(
    autojump_clock: trio.abc.Clock, kernel: Kernel, rootfs: str
) -> None:
    assert await kernel.listdir(f"{rootfs}/usr/share/doc") == [b"new"]
    assert (await kernel.lookup(f"{rootfs}/usr/share/doc/a")).st_ino == 0


async def test_a_file_replaces_a_dir_and_a_dir_a_file(
    autojump_clock: trio.abc.Clock, kernel: Kernel, rootfs: str
) -> None:
    assert stat.S_ISREG((await kernel.lookup(f"{rootfs}/opt")).st_mode)
    assert await kernel.read(f"{rootfs}/opt") == b"a file where a dir was\n"
    with pytest.raises(pyfuse3.FUSEError) as raised:
        await kernel.lookup(f"{rootfs}/opt/x")
    assert raised.value.errno == errno.ENOTDIR
    assert stat.S_ISDIR((await kernel.lookup(f"{rootfs}/var")).st_mode)
    assert await kernel.listdir(f"{rootfs}/var") == [b"inner"]
    assert sorted(await kernel.listdir(rootfs)) == [
        b"etc",
        b"hard",
        b"links",
        b"opt",
        b"usr",
        b"var",
    ]


async def test_hard_links_are_one_inode_counted_by_the_names_left(
    autojump_clock: trio.abc.Clock, kernel: Kernel, rootfs: str
) -> None:
    """``hard/c`` is whited out above: the merged inode has two names left, while the
    bottom layer's dir still shows all three."""
    a, b = [await kernel.lookup(f"{rootfs}/hard/{name}") for name in ("a", "b")]
    assert a.st_ino == b.st_ino and a.st_nlink == b.st_nlink == 2
    assert await kernel.listdir(f"{rootfs}/hard") == [b"a", b"b"]
    layer = rootfs.removesuffix("rootfs") + "0"
    assert (await kernel.lookup(f"{layer}/hard/c")).st_nlink == 3
    listed = {name: attributes for name, attributes, _ in await kernel.readdir(
        await kernel.inode(f"{rootfs}/hard"))}  # fmt: skip
    assert listed[b"a"].st_ino == a.st_ino and listed[b"b"].st_nlink == 2


async def test_a_link_whose_first_name_is_whited_out_keeps_the_content(
    autojump_clock: trio.abc.Clock, kernel: Kernel, rootfs: str
) -> None:
    assert await kernel.listdir(f"{rootfs}/links") == [b"other"]
    other = await kernel.lookup(f"{rootfs}/links/other")
    assert other.st_nlink == 1 and stat.S_ISREG(other.st_mode)
    assert await kernel.read(f"{rootfs}/links/other") == b"kept by its other name\n"


async def test_hard_linked_links_and_devices_count_the_names_left_too(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel
) -> None:
    """Only regular files had their names counted: a hard-linked symlink or device whose
    other name a layer above whites out showed 2 links, where an unpack has 1."""
    bottom = gzip_layer(
        member("s", None, type=tarfile.SYMTYPE, linkname="target"),
        member("s2", None, type=tarfile.LNKTYPE, linkname="s"),
        member("null", None, type=tarfile.CHRTYPE, devmajor=1, devminor=3),
        member("null2", None, type=tarfile.LNKTYPE, linkname="null"),
    )
    top = gzip_layer(member(".wh.s", b""), member(".wh.null", b""))
    digest = registry.push("special", "1", [bottom, top])
    rootfs = f"{HOST}/special/{digest.replace(':', '-')}/rootfs"
    assert await kernel.listdir(rootfs) == [b"null2", b"s2"]
    for name in ("null2", "s2"):
        assert (await kernel.lookup(f"{rootfs}/{name}")).st_nlink == 1
    layer = rootfs.removesuffix("rootfs") + "0"
    assert (await kernel.lookup(f"{layer}/s2")).st_nlink == 2  # the layer's own count


async def test_whiteouts_show_as_overlayfs_devices_in_their_layer_dir(
    autojump_clock: trio.abc.Clock, kernel: Kernel, rootfs: str
) -> None:
    layer = rootfs.removesuffix("rootfs") + "1"
    gone = await kernel.lookup(f"{layer}/etc/gone")
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0
    assert await kernel.listdir(f"{layer}/usr/share/doc") == [b"new"]


async def test_the_root_is_provisional_until_indexed_then_the_top_dot_entry(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel, rootfs: str
) -> None:
    """``ls -l TAG/`` fetches no layer: until every layer is indexed, the root shows
    0555 and the kernel may not keep it; then the ``./`` of the highest layer with one."""
    before = await kernel.lookup(rootfs)
    assert before.st_mode == stat.S_IFDIR | 0o555 and before.attr_timeout == 0
    assert registry.blob_gets(sha256(BOTTOM)) == registry.blob_gets(sha256(TOP)) == 0
    await kernel.listdir(rootfs)
    after = await kernel.operations.getattr(before.st_ino, CONTEXT)
    assert after.st_mode == stat.S_IFDIR | 0o750 and (after.st_uid, after.st_gid) == (7, 8)
    assert after.st_mtime_ns == TOP_TIME * 10**9
    assert after.attr_timeout == after.entry_timeout == IMMUTABLE_TIMEOUT


async def test_the_root_takes_a_lower_dot_entry_when_the_top_has_none(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel
) -> None:
    bottom = gzip_layer(directory("./", mode=0o700, uid=3, mtime=BOTTOM_TIME), member("a", b""))
    top = gzip_layer(member("b", b""))
    digest = registry.push("app", "1", [bottom, top])
    rootfs = f"{HOST}/app/{digest.replace(':', '-')}/rootfs"
    assert await kernel.listdir(rootfs) == [b"a", b"b"]
    root = await kernel.lookup(rootfs)
    assert root.st_mode == stat.S_IFDIR | 0o700 and root.st_uid == 3
    assert root.st_mtime_ns == BOTTOM_TIME * 10**9


async def test_a_layer_root_is_provisional_until_its_layer_is_indexed(
    autojump_clock: trio.abc.Clock, registry: MemoryRegistry, kernel: Kernel, rootfs: str
) -> None:
    layer = rootfs.removesuffix("rootfs") + "1"
    before = await kernel.lookup(layer)
    assert before.st_mode == stat.S_IFDIR | 0o555 and before.attr_timeout == 0
    assert registry.blob_gets(sha256(TOP)) == 0
    await kernel.listdir(layer)
    after = await kernel.operations.getattr(before.st_ino, CONTEXT)
    assert after.st_mode == stat.S_IFDIR | 0o750 and after.attr_timeout == IMMUTABLE_TIMEOUT
    assert registry.blob_gets(sha256(BOTTOM)) == 0
