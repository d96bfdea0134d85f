"""``rootfs/``: every layer of an image merged with OCI whiteout semantics.

Tree layer. Directories are identified by path and remember which layers' directories
they merge (see ``regfs.layers.formats.merge``), found top first as far down as an answer
needs (``merged_dir.py``): a lookup fetches the layers from the top down to the one that
provides the name, and the image's other layers are indexed after, in the background,
while the files the image's start record names are fetched (``layers/start_reads.py``).
Every other entry is identified by the layer and inode it comes from, so hard links in
one layer stay one inode, counted by the names still visible after the layers above it.
A directory's identity includes the digest dir showing it (an index dir shows its
platform's image too): the kernel keeps one dentry per directory inode (see
``tree/layer.py``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Hashable, Sequence

import trio

from regfs.cache.memory import keep
from regfs.domain.digest import Digest
from regfs.domain.errors import NoEntry, NotFound, RegfsError
from regfs.layers.formats.entries import DEFAULT_DIR_MODE, EntryKind, IndexEntry
from regfs.layers.formats.merge import Resolved, resolve
from regfs.layers.index.layer_index import LayerIndex
from regfs.layers.layer_ref import LayerRef
from regfs.tree.context import TreeContext
from regfs.tree.entry_nodes import (
    EntrySource,
    entry_node,
    entry_stat,
    entry_xattrs,
    layer_xattr,
)
from regfs.tree.layer import provisional_directory, root_stat
from regfs.tree.merged_dir import ChildCandidates, MergedDir, RootCandidates
from regfs.tree.node import Directory, Kind, Node, Stat
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
        *,
        place: Hashable,
    ) -> None:
        """``place``: the key of the digest dir showing the merged tree."""
        self.context = context
        self.image = image
        self.layers = tuple(layers)
        self.key = (host, repository, str(image))  # strings: their hashes are kept
        """Identifies this image's merged tree among all mounted ones (its files' inodes)."""
        self.place = place
        """Identifies where it is shown (its directories' inodes and listings)."""
        self._found: list[LayerIndex | None] = [None] * len(self.layers)
        self.root_dir = MergedDir(RootCandidates(len(self.layers), self.index_at))

    async def index_at(self, position: int) -> LayerIndex:
        """The index of the layer at ``position``, fetched now if need be; the other
        layers are then indexed in the background, top first (each once per mount)."""
        index = self._found[position]
        if index is None:
            rest = [layer for n, layer in enumerate(self.layers) if n != position]
            self.context.layers.index_soon(rest[::-1])
            self.context.layers.starts.recorded_soon(self.layers)
            index = self._found[position] = await self.context.layers.index(self.layers[position])
        return index

    async def indexes(self) -> list[LayerIndex]:
        """Every layer's index (for a listing: each layer may contribute to it)."""
        if None in self._found:
            try:
                async with trio.open_nursery() as nursery:
                    for position in range(len(self.layers)):
                        nursery.start_soon(self.index_at, position)
            except BaseExceptionGroup as group:
                raise _first_domain_error(group) from None
        return [index for index in self._found if index is not None]

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

    async def resolve_path(self, parts: Sequence[bytes]) -> Resolved | None:
        resolved = await self.root_dir.resolved()
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
            return RootfsDir(self, path, MergedDir.of(resolved))
        entry = resolved.entry
        key = ("rootfs-inode", self.key, resolved.layer, entry.inode_id)
        layer = resolved.layer
        source = EntrySource(self.context.layers, self.layers[layer], await self.index_at(layer),
                             layer)  # fmt: skip
        return entry_node(key, source, entry, functools.partial(self.visible_links, layer, entry))


def _first_domain_error(group: BaseExceptionGroup) -> BaseException:
    """What one layer's failure means to the caller (ENOENT, EACCES, EIO), not a group."""
    found: BaseException | None = group.subgroup(lambda error: isinstance(error, RegfsError))
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    return found if found is not None else group


class RootfsDir(Directory):
    """A merged directory; ``merged`` is None for the root (its image's ``root_dir``)."""

    def __init__(
        self, image: MergedImage, path: tuple[bytes, ...], merged: MergedDir | None
    ) -> None:
        self.image = image
        self.path = path
        self.merged = merged if merged is not None else image.root_dir
        self.key = ("rootfs", image.place, path)
        self._stat: Stat | None = None

    async def _resolved(self) -> Resolved:
        resolved = await self.merged.resolved()
        if resolved is None:
            raise NotFound(f"image {self.image.image}: the root is whited out")
        return resolved

    async def _attributes(self) -> tuple[int, IndexEntry] | None:
        """Where the directory's attributes come from; for the root, only once every layer
        is indexed (asking never fetches it: ``ls TAG/`` fetches no layer)."""
        if self.path:
            return await self.merged.attributes()
        root = self.image.known_root()
        return (root.layer, root.entry) if root is not None else None

    async def stat(self) -> Stat:
        """The root takes the ``.`` entry of the highest layer that has one, as an
        unpack applies them; until every layer is indexed it is provisional."""
        if self._stat is not None:
            return self._stat
        found = await self._attributes()
        if found is None:
            return provisional_directory(self.image.context)
        if not self.path:
            return root_stat(self.image.context, found[1])
        self._stat = entry_stat(found[1])  # made once, as a file's
        return self._stat

    async def xattrs(self) -> dict[str, bytes]:
        found = await self._attributes()
        return entry_xattrs(found[1]) if found is not None else {}

    async def xattr(self, name: str) -> bytes | None:
        if name == LAYER_XATTR:
            found = await self._attributes()
            if found is None:
                return None
            return layer_xattr(found[0], self.image.layers[found[0]])
        return await super().xattr(name)

    async def entries(self) -> Sequence[tuple[str, Node]]:
        listings = self.image.context.merged_listings
        key = (self.image.place, self.path)
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
        """The first layer down from the top that has ``name`` in a directory merged here
        decides (a whiteout hides it, a file wins, a directory is merged further down only
        when asked): the layers below it are not fetched for this."""
        raw = os.fsencode(name)
        path = (*self.path, raw)
        number = 0
        while (found := await self.merged.contribution(number)) is not None:
            number += 1
            position, directory = found
            entry = (await self.image.index_at(position)).child(directory.id, raw)
            if entry is None:
                continue
            if entry.kind is EntryKind.DIRECTORY:
                children = ChildCandidates(self.merged, raw, self.image.index_at)
                return RootfsDir(self.image, path, MergedDir(children))
            if entry.kind is not EntryKind.WHITEOUT:
                return await self.image.node(path, Resolved(position, entry))
            break
        where = os.fsdecode(b"/".join(self.path))
        raise NoEntry(f"image {self.image.image}: no {name!r} in rootfs/{where}")


class EmptyRootfs(Directory):
    """``rootfs/`` of an image of no layer (``FROM scratch`` with settings alone, an
    artifact of annotations alone): an empty directory, as ``umoci unpack`` makes it, with
    what the root of a layer without a ``./`` entry shows (0755, root, the mount time)."""

    def __init__(self, context: TreeContext, image: Digest, place: Hashable) -> None:
        self.context = context
        self.image = image
        self.key = ("rootfs", place, ())

    async def stat(self) -> Stat:
        mount_time = self.context.mount_time_ns
        return Stat(Kind.DIRECTORY, 0, DEFAULT_DIR_MODE, immutable=True, mtime_ns=mount_time)

    async def lookup(self, name: str) -> Node:
        raise NoEntry(f"image {self.image}: no {name!r} in rootfs/ (the image has no layer)")
