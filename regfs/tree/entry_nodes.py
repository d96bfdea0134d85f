"""Nodes for the files of a layer, shared by layer dirs and ``rootfs/``.

Tree layer. An ``EntrySource`` says where an index entry's bytes come from (which layer
blob, which index); the node classes turn an entry into what the kernel sees.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass

from regfs.layers.formats.entries import EntryKind, IndexEntry
from regfs.layers.index.layer_index import LayerIndex
from regfs.layers.layer_ref import LayerRef
from regfs.layers.layer_store import LayerStore
from regfs.tree.node import File, Kind, Node, Stat, Symlink
from regfs.tree.xattrs import LAYER_XATTR

KIND_OF_ENTRY = {
    EntryKind.FILE: Kind.FILE,
    EntryKind.DIRECTORY: Kind.DIRECTORY,
    EntryKind.SYMLINK: Kind.SYMLINK,
    EntryKind.CHAR_DEVICE: Kind.CHAR_DEVICE,
    EntryKind.BLOCK_DEVICE: Kind.BLOCK_DEVICE,
    EntryKind.FIFO: Kind.FIFO,
    EntryKind.WHITEOUT: Kind.CHAR_DEVICE,  # overlayfs' form: a 0/0 character device
}


@dataclass(frozen=True, slots=True)
class EntrySource:
    store: LayerStore
    layer: LayerRef
    index: LayerIndex
    position: int | None = None
    """The layer's position in its image (0 = bottom), for entries of ``rootfs/``."""


def layer_xattr(position: int, layer: LayerRef) -> bytes:
    """``user.regfs.layer``: ``<position> <layer digest>``."""
    return f"{position} {layer.digest}".encode()


def entry_stat(entry: IndexEntry, nlink: int | None = None) -> Stat:
    kind = KIND_OF_ENTRY[entry.kind]
    rdev = 0
    if entry.kind in (EntryKind.CHAR_DEVICE, EntryKind.BLOCK_DEVICE):
        rdev = os.makedev(entry.rdev_major, entry.rdev_minor)
    return Stat(
        kind=kind,
        size=len(entry.target) if kind is Kind.SYMLINK else entry.size,
        permissions=0o777 if kind is Kind.SYMLINK else entry.mode,  # as tar -x makes them
        immutable=True,
        mtime_ns=entry.mtime_ns,
        nlink=1 if kind is Kind.DIRECTORY else (nlink if nlink is not None else entry.nlink),
        uid=as_extracted(entry.uid),
        gid=as_extracted(entry.gid),
        rdev=rdev,
    )


NO_ID = (1 << 32) - 1
"""The id ``(uid_t) -1``: to chown(2) it means "leave this id as it is"."""


def as_extracted(owner: int) -> int:
    """The id an unpacked file gets for a member's uid or gid. For ``(uid_t) -1``, GNU tar
    and umoci, extracting as root, call chown with it and the file keeps root's id, 0; shown
    as is, the kernel would make it the overflow id, 65534."""
    return 0 if owner == NO_ID else owner


NOT_FROM_IMAGES = frozenset({b"security.selinux"})
"""Attributes a layer may carry that no unpacker applies: an SELinux label is the host's
policy to give (umoci and containers/storage drop it), and one copied out of an image by
``cp -a`` or ``rsync -X`` would mislabel the host's files."""


def entry_xattrs(entry: IndexEntry) -> dict[str, bytes]:
    return {os.fsdecode(name): value for name, value in entry.xattrs
            if name not in NOT_FROM_IMAGES}  # fmt: skip


VisibleLinks = Callable[[], Awaitable[int]]
"""How many names of a hard-linked entry ``rootfs/`` still shows (layers above may have
whited out or replaced others)."""


class EntryNode(Node):
    """A node whose attributes are those of one index entry; ``links`` counts its names
    where they are not all shown (``rootfs/``), else the layer's count is its own."""

    def __init__(
        self, key: Hashable, source: EntrySource, entry: IndexEntry,
        links: VisibleLinks | None = None,
    ) -> None:  # fmt: skip
        self.key = key
        self.source = source
        self.entry = entry
        self.hard_linked = entry.nlink > 1 and entry.kind is not EntryKind.DIRECTORY
        self._links = links
        self._stat: Stat | None = None

    async def stat(self) -> Stat:
        # made once: a cold `find -ls` asks for every entry of every listing again
        if self._stat is None:
            links = self._links
            nlink = await links() if links is not None and self.entry.nlink > 1 else None
            self._stat = entry_stat(self.entry, nlink)
        return self._stat

    async def xattrs(self) -> dict[str, bytes]:
        return entry_xattrs(self.entry)

    async def xattr(self, name: str) -> bytes | None:
        if name == LAYER_XATTR and self.source.position is not None:
            return layer_xattr(self.source.position, self.source.layer)
        return await super().xattr(name)


class EntryFile(EntryNode, File):
    """A regular file: a byte range of the layer's uncompressed tar."""

    async def read(self, offset: int, size: int) -> bytes:
        size = max(0, min(size, self.entry.size - offset))
        if size == 0:
            return b""
        source, start = self.source, self.entry.data_offset
        if (recorder := source.store.recorder) is not None:
            recorder.first_read(source.index, self.entry)
        file = (start, start + self.entry.size)
        return await source.store.read(source.layer, source.index, start + offset, size, file)


class EntrySymlink(EntryNode, Symlink):
    """A symlink, served exactly as stored: never resolved by regfs."""

    async def target(self) -> str:
        return os.fsdecode(self.entry.target)


class EntrySpecial(EntryNode):
    """A device, fifo or (in a layer dir) whiteout: attributes only."""


def entry_node(
    key: Hashable, source: EntrySource, entry: IndexEntry, links: VisibleLinks | None = None
) -> Node:
    """The node for a non-directory entry (layer dirs and rootfs make their own dirs)."""
    if entry.kind is EntryKind.FILE:
        return EntryFile(key, source, entry, links)
    if entry.kind is EntryKind.SYMLINK:
        return EntrySymlink(key, source, entry, links)
    return EntrySpecial(key, source, entry, links)
