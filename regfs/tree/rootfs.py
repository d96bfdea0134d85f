"""``rootfs/``: every layer of an image merged with OCI whiteout semantics.

Tree layer. Directories are identified by path and remember which layers' directories
they merge (see ``regfs.layers.formats.merge``); every other entry is identified by the layer and
inode it comes from, so hard links in one layer stay one inode, counted by the names
still visible after the layers above it.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Sequence

import trio

from regfs.cache.memory import keep
from regfs.domain.digest import Digest
from regfs.domain.errors import NoEntry, NotFound, RegfsError
from regfs.layers.formats.entries import ROOT_ID, EntryKind, IndexEntry
from regfs.layers.formats.merge import Resolved, resolve
from regfs.layers.index.layer_index import LayerIndex
from regfs.layers.layer_ref import LayerRef
from regfs.tree.context import TreeContext
from regfs.tree.entry_nodes import (
    EntryFile,
    EntrySource,
    entry_node,
    entry_stat,
    entry_xattrs,
    layer_xattr,
)
from regfs.tree.layer import provisional_directory, root_stat
from regfs.tree.node import Directory, Node, Stat
from regfs.tree.xattrs import LAYER_XATTR


class MergedImage:
    """The layers of one image, bottom first, with their indexes once built."""

    def __init__(
        self,
        context: TreeContext,
        host: str,
        repository: str,
        image: Digest,
        layers: Sequence[LayerRef],
    ) -> None:
        self.context = context
        self.image = image
        self.layers = tuple(layers)
        self.key = (host, repository, image)
        """Identifies this image's merged tree among all mounted ones."""
        self._indexes: list[LayerIndex] | None = None

    async def indexes(self) -> list[LayerIndex]:
        if self._indexes is None:
            found: list[LayerIndex | None] = [None] * len(self.layers)

            async def build(position: int) -> None:
                found[position] = await self.context.layers.index(self.layers[position])

            try:
                async with trio.open_nursery() as nursery:
                    for position in range(len(self.layers)):
                        nursery.start_soon(build, position)
            except BaseExceptionGroup as group:
                raise _first_domain_error(group) from None
            self._indexes = [index for index in found if index is not None]
        return self._indexes

    def known_root(self) -> Resolved | None:
        """The merged root, if every layer is indexed already (asking never fetches)."""
        indexes = [self.context.layers.known_index(layer) for layer in self.layers]
        if None in indexes:
            return None
        return resolve(
            (position, index.root())
            for position, index in reversed(list(enumerate(indexes)))
            if index is not None
        )

    def source(self, position: int, indexes: list[LayerIndex]) -> EntrySource:
        return EntrySource(self.context.layers, self.layers[position], indexes[position], position)

    async def root(self) -> Resolved | None:
        indexes = await self.indexes()
        top_first = range(len(indexes) - 1, -1, -1)
        return resolve((position, indexes[position].entry(ROOT_ID)) for position in top_first)

    async def resolve_path(self, parts: Sequence[bytes]) -> Resolved | None:
        resolved = await self.root()
        indexes = await self.indexes()
        for part in parts:
            if resolved is None or not resolved.is_directory:
                return None
            resolved = resolve(
                (position, indexes[position].child(entry.id, part))
                for position, entry in resolved.directories
            )
        return resolved

    async def visible_links(self, position: int, entry: IndexEntry) -> int:
        """How many names of a hard-linked inode the merged tree still shows."""
        index = (await self.indexes())[position]
        count = 0
        for name in index.names_of(entry.inode_id):
            found = await self.resolve_path(index.path_of(name.id))
            if (
                found is not None
                and found.layer == position
                and found.entry.inode_id == entry.inode_id
            ):
                count += 1
        return max(count, 1)

    async def node(self, path: tuple[bytes, ...], resolved: Resolved) -> Node:
        if resolved.is_directory:
            return RootfsDir(self, path, resolved)
        indexes = await self.indexes()
        entry = resolved.entry
        key = ("rootfs-inode", self.key, resolved.layer, entry.inode_id)
        source = self.source(resolved.layer, indexes)
        if entry.kind is EntryKind.FILE:
            return RootfsFile(key, self, resolved.layer, source, entry)
        return entry_node(key, source, entry)


def _first_domain_error(group: BaseExceptionGroup) -> BaseException:
    """What one layer's failure means to the caller (ENOENT, EACCES, EIO), not a group."""
    found: BaseException | None = group.subgroup(lambda error: isinstance(error, RegfsError))
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    return found if found is not None else group


class RootfsFile(EntryFile):
    def __init__(
        self,
        key: Hashable,
        image: MergedImage,
        position: int,
        source: EntrySource,
        entry: IndexEntry,
    ) -> None:
        super().__init__(key, source, entry)
        self.image = image
        self.position = position
        self._nlink: int | None = None

    async def stat(self) -> Stat:
        if self.entry.nlink == 1:
            return entry_stat(self.entry)
        if self._nlink is None:
            self._nlink = await self.image.visible_links(self.position, self.entry)
        return entry_stat(self.entry, self._nlink)


class RootfsDir(Directory):
    """A merged directory; ``resolved`` is None only for the root before its first use."""

    def __init__(
        self, image: MergedImage, path: tuple[bytes, ...], resolved: Resolved | None
    ) -> None:
        self.image = image
        self.path = path
        self.resolved = resolved
        self.key = ("rootfs", image.key, path)

    async def _resolved(self) -> Resolved:
        if self.resolved is None:
            self.resolved = await self.image.root()
            if self.resolved is None:
                raise NotFound(f"image {self.image.image}: the root is whited out")
        return self.resolved

    def _known(self) -> Resolved | None:
        """What this dir merges, if known without indexing a layer (the root's is not
        until every layer is indexed; another dir's always is)."""
        return self.resolved if self.path else self.resolved or self.image.known_root()

    async def stat(self) -> Stat:
        """The root takes the ``.`` entry of the highest layer that has one, as an
        unpack applies them; until every layer is indexed it is provisional."""
        resolved = self._known()
        if resolved is None:
            return provisional_directory(self.image.context)
        if not self.path:
            return root_stat(self.image.context, resolved.entry)
        return entry_stat(resolved.entry)

    async def xattrs(self) -> dict[str, bytes]:
        resolved = self._known()
        return entry_xattrs(resolved.entry) if resolved is not None else {}

    async def xattr(self, name: str) -> bytes | None:
        if name == LAYER_XATTR:
            resolved = self._known()
            if resolved is None:
                return None
            return layer_xattr(resolved.layer, self.image.layers[resolved.layer])
        return await super().xattr(name)

    async def entries(self) -> Sequence[tuple[str, Node]]:
        listings = self.image.context.merged_listings
        key = (self.image.key, self.path)
        listing = listings.get(key)
        if listing is None:
            listing = await self._merge_listing()
            keep(listings, key, listing)
        return listing

    async def _merge_listing(self) -> list[tuple[str, Node]]:
        resolved = await self._resolved()
        indexes = await self.image.indexes()
        listings = [
            (position, {child.name: child for child in await indexes[position].children(entry.id)})
            for position, entry in resolved.directories
        ]
        names = sorted({name for _, children in listings for name in children})
        result: list[tuple[str, Node]] = []
        for name in names:
            child = resolve((position, children.get(name)) for position, children in listings)
            if child is not None:
                result.append((os.fsdecode(name), await self.image.node((*self.path, name), child)))
        return result

    async def lookup(self, name: str) -> Node:
        resolved = await self._resolved()
        indexes = await self.image.indexes()
        raw = os.fsencode(name)
        child = resolve(
            (position, indexes[position].child(entry.id, raw))
            for position, entry in resolved.directories
        )
        if child is None:
            where = os.fsdecode(b"/".join(self.path))
            raise NoEntry(f"image {self.image.image}: no {name!r} in rootfs/{where}")
        return await self.image.node((*self.path, raw), child)
