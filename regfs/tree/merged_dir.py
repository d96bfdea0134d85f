"""A directory of ``rootfs/`` as the layers' directories it merges, found top first.

Tree layer. A layer's index is fetched only when an answer needs it (for a plain gzip
layer, that is its whole blob): a lookup goes down from the top layer and stops at the
first layer that has the name (a file, a whiteout, a directory), so opening a file costs
the layers from the top down to the one that provides it, not every layer of the image.
A directory's attributes need its contributions down to the first explicit one (usually
the top one); its listing needs every contributing layer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from regfs.layers.formats.entries import ROOT_ID, IndexEntry
from regfs.layers.formats.merge import Resolved, TopDown
from regfs.layers.index.layer_index import LayerIndex

IndexAt = Callable[[int], Awaitable[LayerIndex]]
"""The index of the image's layer at a position (0 = bottom), fetched if need be."""


class Candidates(Protocol):
    async def next(self) -> tuple[int, IndexEntry | None] | None:
        """The next lower layer's entry for the directory (None where it has none), or
        None past the bottom layer."""
        ...


class MergedDir:
    """The contributing directories of one merged directory, resolved as far down as
    asked."""

    def __init__(self, candidates: Candidates | None, resolved: Resolved | None = None) -> None:
        self._candidates = candidates
        self._merging = TopDown()
        self._done = candidates is None
        if resolved is not None:
            self._merging.directories.extend(resolved.directories)
        self._lock = trio.Lock()

    @classmethod
    def of(cls, resolved: Resolved) -> MergedDir:
        """A directory resolved already, through every layer."""
        return cls(None, resolved)

    async def contribution(self, number: int) -> tuple[int, IndexEntry] | None:
        """The ``number``-th contributing directory, top first (None: there are fewer)."""
        directories = self._merging.directories
        while number >= len(directories) and not self._done:
            async with self._lock:  # one task advances the candidates at a time
                if number < len(directories) or self._done:
                    continue
                assert self._candidates is not None
                candidate = await self._candidates.next()
                if candidate is None or not self._merging.offer(*candidate):
                    self._done = True
        return directories[number] if number < len(directories) else None

    async def resolved(self) -> Resolved | None:
        """Resolved through every layer it needs (for a listing)."""
        while await self.contribution(len(self._merging.directories)) is not None:
            pass
        return self._merging.result()

    async def attributes(self) -> tuple[int, IndexEntry] | None:
        """The layer and entry whose attributes the directory shows: the highest that lists
        it explicitly (an implicit parent made for a child does not count), or the top one
        if none does."""
        number = 0
        while (found := await self.contribution(number)) is not None:
            if not found[1].implicit:
                return found
            number += 1
        return await self.contribution(0)


class RootCandidates:
    """The root of each layer, top first."""

    def __init__(self, layers: int, index_at: IndexAt) -> None:
        self._position = layers
        self._index_at = index_at

    async def next(self) -> tuple[int, IndexEntry | None] | None:
        position = self._position - 1
        if position < 0:
            return None
        root = (await self._index_at(position)).entry(ROOT_ID)
        self._position = position  # only now: a layer that failed is asked for again
        return position, root


class ChildCandidates:
    """The entry named ``name`` in each directory contributing to ``parent``, top first."""

    def __init__(self, parent: MergedDir, name: bytes, index_at: IndexAt) -> None:
        self._parent = parent
        self._name = name
        self._index_at = index_at
        self._number = 0

    async def next(self) -> tuple[int, IndexEntry | None] | None:
        found = await self._parent.contribution(self._number)
        if found is None:
            return None
        position, directory = found
        entry = (await self._index_at(position)).child(directory.id, self._name)
        self._number += 1  # only now: a layer that failed is asked for again
        return position, entry
