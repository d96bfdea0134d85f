"""Layer dirs ``0/ … N-1/``: one layer's own tree, in the form overlayfs takes as lowerdir.

Tree layer. Whiteouts are 0/0 character devices and opaque directories carry
``trusted.overlay.opaque=y`` (and ``user.overlay.opaque``, for ``-o userxattr``), so
``mount -t overlay -o lowerdir=N-1:…:0`` shows what ``rootfs/`` shows. The layer's index
is built the first time anything below its root is listed or looked up. Until then the
root answers ``stat`` with provisional attributes the kernel may not keep (``ls -l TAG/``
fetches no layer); from then on with the layer's own ``.`` entry, as ``tar -x`` applies it.

A directory's key names its path (its layer root's place and its entry), never only its
layer: one blob is often shown at several paths (twice in one image, a base layer in many
images), and the kernel keeps one dentry per directory inode, so one inode found at a
second path has its dentry moved there (a shell's cwd, and its ``..``, jump to the other
image) and overlayfs refuses two lowerdirs that are one inode. Other entries are keyed by
the layer's index and inode, shared wherever the layer is shown: one file's pages are
kept once, and hard links stay one inode.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Hashable, Sequence

from regfs.domain.errors import NoEntry
from regfs.layers.formats.entries import ROOT_ID, EntryKind, IndexEntry
from regfs.layers.index.layer_index import LayerIndex
from regfs.layers.layer_ref import LayerRef
from regfs.tree.context import TreeContext
from regfs.tree.entry_nodes import (
    EntryNode,
    EntrySource,
    entry_node,
    entry_stat,
    entry_xattrs,
)
from regfs.tree.node import DIRECTORY_PERMISSIONS, Directory, Kind, Node, Stat
from regfs.tree.xattrs import (
    ACCESS_XATTR,
    DIGEST_XATTR,
    FETCHED_XATTR,
    MEDIA_TYPE_XATTR,
    OPAQUE_XATTR,
    PROBED_BY_LS,
    USER_OPAQUE_XATTR,
)


def layer_node(root: Hashable, source: EntrySource, entry: IndexEntry) -> Node:
    """The node for ``entry`` of the layer whose root has key ``root`` (see the module
    docstring). Keyed by the index file, not only the digest: a zTOC's index numbers
    entries its own way."""
    if entry.kind is EntryKind.DIRECTORY:
        return LayerDir(("layer-dir", root, source.index.path, entry.id), source, entry, root)
    key = ("layer", source.layer.host, source.layer.repository, source.index.path, entry.inode_id)
    return entry_node(key, source, entry)


class LayerDir(EntryNode, Directory):
    """A directory inside a layer, below the layer root whose key is ``root``."""

    def __init__(
        self, key: Hashable, source: EntrySource, entry: IndexEntry, root: Hashable
    ) -> None:
        super().__init__(key, source, entry)
        self.root = root

    async def xattrs(self) -> dict[str, bytes]:
        attributes = entry_xattrs(self.entry)
        if self.entry.opaque:
            attributes[OPAQUE_XATTR] = b"y"
        return attributes

    async def xattr(self, name: str) -> bytes | None:
        if name == USER_OPAQUE_XATTR:  # by name only (see its docstring)
            return b"y" if self.entry.opaque else None
        return await super().xattr(name)

    async def entries(self) -> Sequence[tuple[str, Node]]:
        return [
            (os.fsdecode(child.name), layer_node(self.root, self.source, child))
            for child in await self.source.index.children(self.entry.id)
        ]

    async def lookup(self, name: str) -> Node:
        child = self.source.index.child(self.entry.id, os.fsencode(name))
        if child is None:
            raise NoEntry(f"{self.source.layer}: no {name!r} in this layer directory")
        return layer_node(self.root, self.source, child)


def fetched_text(fetched: int, size: int | None) -> bytes:
    """``user.regfs.fetched``: ``<bytes cached> of <bytes> (<percent>%)``, in compressed
    bytes (what crosses the network)."""
    share = 100 * fetched / size if size else 100.0
    return f"{fetched} of {size or 0} ({share:.1f}%)".encode()


def provisional_directory(context: TreeContext) -> Stat:
    """What the root of a layer dir or ``rootfs/`` shows before its layers are indexed:
    ``ls -l TAG/`` must fetch no layer, and the kernel must not keep this once they are."""
    return Stat(
        Kind.DIRECTORY, 0, DIRECTORY_PERMISSIONS, immutable=True,
        mtime_ns=context.mount_time_ns, provisional=True, ctime_ns=context.mount_time_ns,
    )  # fmt: skip


def root_stat(context: TreeContext, root: IndexEntry) -> Stat:
    """The attributes of a layer's ``.`` entry, as ``tar -x`` gives its target dir; a root
    the tar does not list keeps the default mode, dated to the mount. Its ctime is the
    mount's, as the provisional attributes' (see ``Stat.ctime_ns``)."""
    if root.implicit:
        return Stat(Kind.DIRECTORY, 0, root.mode, immutable=True, mtime_ns=context.mount_time_ns)
    return dataclasses.replace(entry_stat(root), ctime_ns=context.mount_time_ns)


class LayerRoot(Directory):
    """``i/``: the root of layer i; builds the layer's index on first use. ``place`` names
    where it is shown (its image dir and position, or a layer store's layer dir): one
    layer shown at two places is two directories (see the module docstring)."""

    def __init__(
        self,
        context: TreeContext,
        layer: LayerRef,
        place: Hashable,
        image_layers: Sequence[LayerRef] = (),
    ) -> None:
        """``image_layers``: those of the image shown (bottom first), whose start record
        is looked for when this layer is first used (``layers/start_reads.py``)."""
        self.context = context
        self.layer = layer
        self.image_layers = tuple(image_layers)
        # per image too: an image may read the layer through its own zTOC
        self.key = ("layer-root", place, layer.host, layer.repository, layer.digest,
                    layer.image, layer.soci_index)  # fmt: skip

    def _source(self, index: LayerIndex) -> EntrySource:
        return EntrySource(self.context.layers, self.layer, index)

    async def _root(self) -> LayerDir:
        self.context.layers.starts.recorded_soon(self.image_layers)
        index = await self.context.layers.index(self.layer)
        return LayerDir(self.key, self._source(index), index.entry(ROOT_ID), self.key)

    def _known_root(self) -> LayerDir | None:
        """The root, if the layer is indexed already (asking never fetches it)."""
        index = self.context.layers.known_index(self.layer)
        if index is None:
            return None
        return LayerDir(self.key, self._source(index), index.root(), self.key)

    async def stat(self) -> Stat:
        root = self._known_root()
        if root is None:
            return provisional_directory(self.context)
        return root_stat(self.context, root.entry)

    async def xattrs(self) -> dict[str, bytes]:
        """The ``.`` entry's own attributes once the layer is indexed, and regfs's: what
        the layer is and how it is (or would be) read, fetching nothing."""
        attributes = await self._described()
        attributes[FETCHED_XATTR] = await self._fetched()
        return attributes

    async def xattr(self, name: str) -> bytes | None:
        """One attribute; how much of the layer is cached (a stat per piece: 20 ms for a
        Debian layer's TOC chunks) only when that is the one asked for, not for each of
        the attributes overlayfs asks of a lower layer's root as it mounts it."""
        if name in PROBED_BY_LS:  # asked of every entry by `ls -l`: cheaply absent
            return None
        if name == FETCHED_XATTR:
            return await self._fetched()
        return (await self._described()).get(name)

    async def _described(self) -> dict[str, bytes]:
        root = self._known_root()
        attributes = await root.xattrs() if root is not None else {}
        attributes[DIGEST_XATTR] = str(self.layer.digest).encode()
        attributes[MEDIA_TYPE_XATTR] = self.layer.descriptor.media_type.encode()
        attributes[ACCESS_XATTR] = self.context.layers.access(self.layer).encode()
        return attributes

    async def _fetched(self) -> bytes:
        fetched = await self.context.layers.fetched(self.layer)
        return fetched_text(fetched, self.layer.descriptor.size)

    async def entries(self) -> Sequence[tuple[str, Node]]:
        return await (await self._root()).entries()

    async def lookup(self, name: str) -> Node:
        return await (await self._root()).lookup(name)
