"""The node interface every entry of the mounted tree implements.

Tree layer: pure interface, no IO. A node is a cheap handle identified by ``key``; what it
shows is asked of the services it holds, so two nodes with one key are interchangeable.
"""

from __future__ import annotations

import enum
import stat
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import NoReturn

from regfs.domain.errors import NotFound, ReadOnly


class Kind(enum.Enum):
    DIRECTORY = stat.S_IFDIR
    FILE = stat.S_IFREG
    SYMLINK = stat.S_IFLNK
    CHAR_DEVICE = stat.S_IFCHR
    BLOCK_DEVICE = stat.S_IFBLK
    FIFO = stat.S_IFIFO


@dataclass(frozen=True, slots=True)
class Stat:
    kind: Kind
    size: int
    permissions: int
    _: KW_ONLY
    immutable: bool
    """True under a digest dir: the kernel may cache it for as long as it likes."""
    mtime_ns: int = 0
    nlink: int = 1
    uid: int = 0
    gid: int = 0
    rdev: int = 0
    """Device number (``os.makedev``) of a char or block device."""
    provisional: bool = False
    """Stands in until what it describes is known (a layer root before its layer is
    indexed): the kernel must ask again each time, never keep it."""
    ctime_ns: int | None = None
    """When the entry's status last changed here; its mtime if None. A layer or rootfs
    root keeps one ctime from provisional to real attributes, so that a `tar -c` that
    started before the layers were indexed does not find the dir "changed as we read it"."""

    @classmethod
    def fixed(cls, kind: Kind, size: int, mtime_ns: int) -> Stat:
        """A dir, file or link of regfs's own under a digest dir (an image dir, its
        ``manifest``, ``config`` and links): read-only, and cached by the kernel for ever."""
        return cls(kind, size, _PERMISSIONS[kind], immutable=True, mtime_ns=mtime_ns)

    @classmethod
    def expiring(cls, kind: Kind, size: int, mtime_ns: int) -> Stat:
        """A dir or link of regfs's own that can change (a host or repository dir, a tag):
        read-only, and asked for again once the metadata TTL has passed."""
        return cls(kind, size, _PERMISSIONS[kind], immutable=False, mtime_ns=mtime_ns)


DIRECTORY_PERMISSIONS = 0o555
FILE_PERMISSIONS = 0o444
SYMLINK_PERMISSIONS = 0o777
_PERMISSIONS = {
    Kind.DIRECTORY: DIRECTORY_PERMISSIONS,
    Kind.FILE: FILE_PERMISSIONS,
    Kind.SYMLINK: SYMLINK_PERMISSIONS,
}


class Node:
    """Base of all nodes; each kind overrides what applies to it."""

    key: Hashable
    """Identity: equal keys name the same entry (and so get the same inode)."""
    hard_linked: bool = False
    """One of several names of one file: its inode number is kept for it after the kernel
    forgets it, so that a walk meeting its other names later (``tar``, ``du``, ``rsync -H``
    match hard links by inode number) sees one file."""

    async def stat(self) -> Stat:
        raise NotImplementedError

    async def xattrs(self) -> Mapping[str, bytes]:
        return {}

    async def xattr(self, name: str) -> bytes | None:
        """One extended attribute, or None; nodes override it where listing all is costly."""
        return (await self.xattrs()).get(name)


class Directory(Node):
    async def lookup(self, name: str) -> Node:
        raise NotFound(name)

    async def entries(self) -> Sequence[tuple[str, Node]]:
        return ()

    async def create(self, name: str) -> NoReturn:
        """A file created here: refused, but a layer store counts podman's ``use`` and
        then answers ENOENT, as its protocol asks."""
        raise ReadOnly(f"{name!r} not created: regfs is read-only")

    async def remove_directory(self, name: str) -> NoReturn:
        """``rmdir`` of an entry: refused, but a layer store counts a release by it."""
        raise ReadOnly(f"{name!r} not removed: regfs is read-only")


class File(Node):
    async def read(self, offset: int, size: int) -> bytes:
        raise NotImplementedError


class Symlink(Node):
    async def target(self) -> str:
        raise NotImplementedError
