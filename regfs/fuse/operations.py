"""The pyfuse3 ``Operations`` adapter: resolve the inode, ask the tree, convert the answer.

FUSE layer. No registry logic lives here. Names cross the boundary as bytes and are
decoded with ``os.fsdecode`` (surrogateescape), so any byte string round-trips.
"""

from __future__ import annotations

import errno
import itertools
import math
import os
from collections.abc import Sequence

import pyfuse3

from regfs.domain.errors import NoEntry
from regfs.fuse.errors import translate_errors
from regfs.tree.inodes import InodeTable
from regfs.tree.node import Directory, File, Node, Stat, Symlink

IMMUTABLE_TIMEOUT = 365 * 24 * 3600.0
"""Seconds the kernel may trust entries under a digest dir: they never change."""
BLOCK_SIZE = 4096


class Operations(pyfuse3.Operations):
    """The read-only filesystem the kernel talks to."""

    supports_dot_lookup = False
    enable_writeback_cache = False
    enable_acl = False

    def __init__(
        self, root: Directory, metadata_ttl: float, request_timeout: float = math.inf
    ) -> None:
        """``request_timeout``: every request's registry calls end within it, together."""
        super().__init__()
        self.inodes = InodeTable(root)
        self.metadata_ttl = metadata_ttl
        self.request_timeout = request_timeout
        self._handles = itertools.count(1)
        self._open_dirs: dict[int, tuple[Directory, Sequence[tuple[str, Node]]]] = {}
        self._open_files: dict[int, File] = {}

    # -- attributes ---------------------------------------------------------------------

    def _attributes(self, inode: int, info: Stat) -> pyfuse3.EntryAttributes:
        attributes = pyfuse3.EntryAttributes()
        attributes.st_ino = pyfuse3.InodeT(inode)
        attributes.generation = 0
        timeout = IMMUTABLE_TIMEOUT if info.immutable else self.metadata_ttl
        attributes.entry_timeout = timeout
        attributes.attr_timeout = timeout
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
        attributes.st_ctime_ns = info.mtime_ns
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
        info = await node.stat()
        return self._attributes(self.inodes.remember(node), info)

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
        return os.fsencode(await node.target())

    # -- directories --------------------------------------------------------------------

    @translate_errors
    async def opendir(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileHandleT:
        directory = self._directory(inode)
        # The listing is taken once per open: offsets into it stay valid however the
        # registry changes while a reader pages through it.
        entries = await directory.entries()
        handle = next(self._handles)
        self._open_dirs[handle] = (directory, entries)
        return pyfuse3.FileHandleT(handle)

    @translate_errors
    async def readdir(
        self, fh: pyfuse3.FileHandleT, start_id: int, token: pyfuse3.ReaddirToken
    ) -> None:
        _, entries = self._open_dirs[fh]
        for position in range(start_id, len(entries)):
            name, node = entries[position]
            inode = self.inodes.inode_of(node)
            attributes = self._attributes(inode, await node.stat())
            if not pyfuse3.readdir_reply(token, os.fsencode(name), attributes, position + 1):
                self.inodes.drop_if_unused(inode)
                return
            self.inodes.remember(node)

    @translate_errors
    async def releasedir(self, fh: pyfuse3.FileHandleT) -> None:
        self._open_dirs.pop(fh, None)

    # -- files --------------------------------------------------------------------------

    @translate_errors
    async def open(
        self, inode: pyfuse3.InodeT, flags: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileInfo:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise pyfuse3.FUSEError(errno.EROFS)
        node = self.inodes.node(inode)
        if not isinstance(node, File):
            raise pyfuse3.FUSEError(errno.EISDIR if isinstance(node, Directory) else errno.EINVAL)
        info = await node.stat()
        handle = next(self._handles)
        self._open_files[handle] = node
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(handle), keep_cache=info.immutable)

    @translate_errors
    async def read(self, fh: pyfuse3.FileHandleT, off: int, size: int) -> bytes:
        return await self._open_files[fh].read(off, size)

    @translate_errors
    async def release(self, fh: pyfuse3.FileHandleT) -> None:
        self._open_files.pop(fh, None)

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

    # -- the filesystem -----------------------------------------------------------------

    @translate_errors
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        data.f_bsize = BLOCK_SIZE
        data.f_frsize = BLOCK_SIZE
        data.f_namemax = 255
        data.f_files = len(self.inodes)
        return data
