"""The pyfuse3 ``Operations`` adapter: resolve the inode, ask the tree, convert the answer.

FUSE layer. No registry logic lives here. Names cross the boundary as bytes and are
decoded with ``os.fsdecode`` (surrogateescape), so any byte string round-trips.

Kernel caching: with pyfuse3's kernel-caching patch (``regfs/patches/``), the kernel skips
open, opendir and their releases, keeps file pages, directory listings and symlink targets,
and ``read``/``readdir`` receive the inode as ``fh``. Without it, ``open`` and ``opendir``
hand out the inode as ``fh`` too, so both paths are the same code. What the kernel keeps
of a mutable entry is invalidated after ``--metadata-ttl`` (``invalidation.py``).
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import math
import os
import time
from collections.abc import Sequence
from typing import NoReturn

import cachetools
import pyfuse3

from regfs.domain.errors import Evicted, NoEntry, NotFound, Unavailable
from regfs.fuse.errors import translate_errors
from regfs.fuse.invalidation import KernelInvalidator
from regfs.tree.inodes import InodeTable
from regfs.tree.node import Directory, File, Kind, Node, Stat, Symlink

IMMUTABLE_TIMEOUT = 365 * 24 * 3600.0
"""Seconds the kernel may trust entries under a digest dir: they never change."""
BLOCK_SIZE = 4096
LINK_TARGET_MAX = 4095
"""Longest symlink target Linux's readlink takes (PATH_MAX, 4096, less its NUL): no
filesystem holds a longer one, but a tar may carry it."""
DOTS = (b".", b"..")
"""The first two entries of every listing (offsets 1 and 2; a directory's own start at 3)."""
LISTINGS_PAGED_AT_ONCE = 64
"""Directory listings kept while the kernel pages through them (see ``readdir``)."""
MUTABLE_LISTINGS_NAMED = 256
"""Mutable dirs whose last listing's names are kept, to notice a name it lacked."""
CHANGES_KEPT = 4096
"""Mutable dirs whose invalidation time is kept as their mtime (others: mount time)."""

log = logging.getLogger(__name__)


def kernel_caching(opens_reach_the_daemon: bool = False) -> str:
    """What the kernel may cache on this mount, for the log (after the kernel's INIT)."""
    in_effect = getattr(pyfuse3, "no_open_in_effect", None)
    if in_effect is None:
        return ("off: this pyfuse3 lacks regfs's kernel-caching patch, so every open and "
                "listing reaches the daemon; `regfs install-pyfuse3` builds and installs "
                "it")  # fmt: skip
    if opens_reach_the_daemon:
        return ("on but for opens: a layer store refuses every open for writing itself; "
                "file pages, listings and symlink targets kept")  # fmt: skip
    files, dirs = in_effect()
    if files and dirs:
        return "on: no open or opendir; file pages, listings and symlink targets kept"
    return f"partial: the kernel skips open {files}, opendir {dirs} (Linux 4.20 / 5.1 needed)"


class Operations(pyfuse3.Operations):
    """The read-only filesystem the kernel talks to."""

    supports_dot_lookup = False
    enable_writeback_cache = False
    enable_acl = False
    enable_symlink_caching = True  # read by patched pyfuse3 only, like enable_no_open
    enable_no_open = True

    def __init__(
        self,
        root: Directory,
        metadata_ttl: float,
        request_timeout: float = math.inf,
        *,
        writable_mount: bool = False,
    ) -> None:
        """``request_timeout``: every request's registry calls end within it, together.
        ``writable_mount``: the mount is not ``ro`` (a layer store's, for podman's
        reference counting), so every open reaches ``open``, which refuses writing: with
        no open, the kernel let a shared writable mapping of a layer's file change the
        pages every other reader of it saw."""
        super().__init__()
        self.enable_no_open = not writable_mount
        self.inodes = InodeTable(root)
        self.metadata_ttl = metadata_ttl
        self.request_timeout = request_timeout
        self.invalidator = KernelInvalidator(pyfuse3.invalidate_inode, self._changed)
        self._changed_at: cachetools.LRUCache[int, int] = cachetools.LRUCache(CHANGES_KEPT)
        """When each mutable dir was last invalidated: its mtime, so the kernel relists."""
        self._paged: cachetools.LRUCache[int, Sequence[tuple[str, Node]]] = cachetools.LRUCache(
            LISTINGS_PAGED_AT_ONCE
        )
        """Listings being paged through, by directory inode."""
        self._listed: cachetools.LRUCache[int, frozenset[str]] = cachetools.LRUCache(
            MUTABLE_LISTINGS_NAMED
        )
        """Names of the last listing of each mutable dir the kernel may hold."""

    def init(self) -> None:
        log.info(
            "kernel caching %s", kernel_caching(opens_reach_the_daemon=not self.enable_no_open)
        )

    # -- attributes ---------------------------------------------------------------------

    def _changed(self, inode: int) -> None:
        self._changed_at[inode] = time.time_ns()

    def _attributes(self, inode: int, info: Stat) -> pyfuse3.EntryAttributes:
        if not info.immutable and info.kind is Kind.DIRECTORY:
            info = dataclasses.replace(info, mtime_ns=self._changed_at.get(inode, info.mtime_ns))
        attributes = pyfuse3.EntryAttributes()
        attributes.st_ino = pyfuse3.InodeT(inode)
        attributes.generation = 0
        timeout = IMMUTABLE_TIMEOUT if info.immutable else self.metadata_ttl
        attributes.entry_timeout = timeout
        attributes.attr_timeout = 0 if info.provisional else timeout
        attributes.st_mode = pyfuse3.ModeT(info.kind.value | info.permissions)
        attributes.st_nlink = info.nlink
        attributes.st_uid = info.uid
        attributes.st_gid = info.gid
        attributes.st_rdev = info.rdev
        attributes.st_size = info.size
        attributes.st_blksize = BLOCK_SIZE
        attributes.st_blocks = (info.size + 511) // 512
        attributes.st_atime_ns = info.mtime_ns
        attributes.st_mtime_ns = info.mtime_ns
        attributes.st_ctime_ns = info.mtime_ns if info.ctime_ns is None else info.ctime_ns
        return attributes

    def _directory(self, inode: int) -> Directory:
        node = self.inodes.node(inode)
        if not isinstance(node, Directory):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return node

    @translate_errors
    async def lookup(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        directory = self._directory(parent_inode)
        try:
            node = await directory.lookup(os.fsdecode(name))
        except NoEntry:
            if not (await directory.stat()).immutable:
                raise
            return self._absent()  # remembered by the kernel: `find`, shells, ld.so ask again
        await self._relist_if_new(parent_inode, os.fsdecode(name))
        info = await node.stat()
        return self._attributes(self.inodes.remember(node, parent_inode), info)

    async def _relist_if_new(self, directory: int, name: str) -> None:
        """A name the kernel's listing of a mutable dir lacks may be listed from now on (a
        repository found although the catalog is refused, a host named): drop that
        listing before answering, so the next ``ls`` shows the name."""
        names = self._listed.get(directory)
        if names is not None and name not in names:
            del self._listed[directory]
            await self.invalidator.now(directory)

    @staticmethod
    def _absent() -> pyfuse3.EntryAttributes:
        """A negative entry (inode 0) the kernel caches as long as an immutable dir lives."""
        attributes = pyfuse3.EntryAttributes()
        attributes.st_ino = pyfuse3.InodeT(0)
        attributes.entry_timeout = IMMUTABLE_TIMEOUT
        return attributes

    @translate_errors
    async def getattr(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return self._attributes(inode, await self.inodes.node(inode).stat())

    @translate_errors
    async def forget(self, inode_list: Sequence[tuple[pyfuse3.InodeT, int]]) -> None:
        for inode, count in inode_list:
            self.inodes.forget(inode, count)

    @translate_errors
    async def readlink(self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext) -> bytes:
        node = self.inodes.node(inode)
        if not isinstance(node, Symlink):
            raise pyfuse3.FUSEError(errno.EINVAL)
        target = os.fsencode(await node.target())
        if len(target) > LINK_TARGET_MAX:  # the kernel would refuse the answer: EIO
            raise pyfuse3.FUSEError(errno.ENAMETOOLONG)  # as creating the link is
        await self._expire_if_mutable(inode, node)
        return target

    async def _expire_if_mutable(self, inode: int, node: Node) -> bool:
        """Have the kernel drop what it keeps of a mutable ``node`` once its TTL passes;
        whether it is mutable."""
        if (await node.stat()).immutable:
            return False
        self.invalidator.schedule(inode, self.metadata_ttl)
        return True

    # -- directories --------------------------------------------------------------------

    @translate_errors
    async def opendir(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileHandleT:
        self._directory(inode)
        return pyfuse3.FileHandleT(inode)

    @translate_errors
    async def readdir(
        self, fh: pyfuse3.FileHandleT, start_id: int, token: pyfuse3.ReaddirToken
    ) -> None:
        """The listing of directory ``fh`` (an inode) from ``start_id`` on.

        ``.`` and ``..`` come first. A listing is taken at offset 0 and kept (the
        ``LISTINGS_PAGED_AT_ONCE`` most recent, by directory) while readers page through
        it, to its end and the kernel's last call past the end: offsets stay valid however
        the registry changes meanwhile, and one kept listing serves several readers at
        once. A reader whose listing was dropped gets a fresh one, as after a rewinddir.
        """
        directory = self._directory(fh)
        entries = self._paged.get(fh) if start_id else None
        if entries is None:
            try:
                entries = await directory.entries()
            except NotFound as error:  # glibc takes ENOENT from getdents for the end of
                raise Unavailable(f"cannot be listed: {error}") from None  # the listing
            self._paged[fh] = entries  # kept whole: the kernel's last call asks past its end
            if await self._expire_if_mutable(fh, directory):
                self._listed[fh] = frozenset(name for name, _ in entries)
        if start_id < len(DOTS) and not await self._reply_dots(fh, directory, start_id, token):
            return
        first = max(start_id - len(DOTS), 0)
        for position in range(first, len(entries)):
            name, node = entries[position]
            inode = self.inodes.remember(node, fh)
            try:
                attributes = self._attributes(inode, await node.stat())
            except Evicted:
                if position == first and start_id >= len(DOTS):
                    raise  # nothing replied yet: built again, and the request asked again
                self.inodes.forget(inode, 1)  # the page ends here: asked again from here,
                return  # its entries are not given twice
            offset = len(DOTS) + position + 1
            if not pyfuse3.readdir_reply(token, os.fsencode(name), attributes, offset):
                self.inodes.forget(inode, 1)  # the kernel did not take it
                return

    async def _reply_dots(
        self, inode: int, directory: Directory, start_id: int, token: pyfuse3.ReaddirToken
    ) -> bool:
        """``.`` and ``..`` from ``start_id`` on, as every local filesystem lists them
        (``ls -a``, tools comparing trees); False once the kernel's buffer is full. The
        kernel takes no reference for them, so none is counted, and keeps only their
        numbers and types (``..`` carries this directory's other attributes)."""
        here = await directory.stat()
        for position in range(start_id, len(DOTS)):
            number = inode if position == 0 else self.inodes.parent_of(inode)
            if not pyfuse3.readdir_reply(
                token, DOTS[position], self._attributes(number, here), position + 1
            ):
                return False
        return True

    # -- files --------------------------------------------------------------------------

    @translate_errors
    async def open(
        self, inode: pyfuse3.InodeT, flags: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileInfo:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise pyfuse3.FUSEError(errno.EROFS)
        self._file(inode)
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(inode), keep_cache=True)  # immutable

    def _file(self, inode: int) -> File:
        node = self.inodes.node(inode)
        if not isinstance(node, File):
            raise pyfuse3.FUSEError(errno.EISDIR if isinstance(node, Directory) else errno.EINVAL)
        return node

    @translate_errors
    async def read(self, fh: pyfuse3.FileHandleT, off: int, size: int) -> bytes:
        return await self._file(fh).read(off, size)

    @translate_errors
    async def release(self, fh: pyfuse3.FileHandleT) -> None:
        """Nothing to release: a file's handle is its inode."""

    @translate_errors
    async def releasedir(self, fh: pyfuse3.FileHandleT) -> None:
        """Nothing to release: a directory's handle is its inode."""

    # -- extended attributes ------------------------------------------------------------

    @translate_errors
    async def getxattr(
        self, inode: pyfuse3.InodeT, name: pyfuse3.XAttrNameT, ctx: pyfuse3.RequestContext
    ) -> bytes:
        value = await self.inodes.node(inode).xattr(os.fsdecode(name))
        if value is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return value

    @translate_errors
    async def listxattr(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> Sequence[pyfuse3.XAttrNameT]:
        attributes = await self.inodes.node(inode).xattrs()
        return [pyfuse3.XAttrNameT(os.fsencode(name)) for name in attributes]

    # -- writes -------------------------------------------------------------------------
    # A browse mount is ``ro``: the kernel refuses writes before they reach us. A layer
    # store cannot be (podman's reference counting must reach it), so each kind of write
    # is refused here; ``create`` and ``rmdir`` are the tree's to answer.

    @translate_errors
    async def create(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, mode: int, flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:  # fmt: skip
        await self._directory(parent_inode).create(os.fsdecode(name))

    @translate_errors
    async def rmdir(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> None:
        await self._directory(parent_inode).remove_directory(os.fsdecode(name))

    async def _refuse(self, *args: object) -> NoReturn:
        raise pyfuse3.FUSEError(errno.EROFS)

    # one answer for every other kind of write (pyfuse3 passes each its own arguments)
    mknod = mkdir = symlink = link = unlink = rename = _refuse  # type: ignore[assignment]
    setattr = write = setxattr = removexattr = _refuse  # type: ignore[assignment]

    # -- the filesystem -----------------------------------------------------------------

    @translate_errors
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        """No blocks and no inodes counted, as procfs: a registry has no size, and inodes
        "all used" (a count with none free) made ``df -i`` show 100 % and monitoring
        (node_exporter's files-free alerts skip only read-only mounts) alert on every
        ``--layer-store`` mount, which is not read-only."""
        data = pyfuse3.StatvfsData()
        data.f_bsize = BLOCK_SIZE
        data.f_frsize = BLOCK_SIZE
        data.f_namemax = 255
        return data
