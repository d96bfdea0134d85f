"""A layer's pieces as its TOC or zTOC lays them out, in memory, before its index is written.

Layers layer: pure, no IO. Writing a layer's index takes its time (a Debian layer's TOC:
its tree 50-80 ms, SQLite 45 ms) and the layer's size and pieces are known before it
starts: a ``LaidOutIndex`` answers what a reader of TOC chunks or zTOC spans asks of an
index (``readers.py``), so a fetch ahead (an eStargz prefetch) can begin at once. Given
the tree's entries too (``with_entries``), it answers every question of a layer's index,
so that lookups and reads need not wait for the file either (``LayerIndex`` answers from
it until the file is written). Its answers are those the written index will give: both
come from the same lists.
"""

from __future__ import annotations

import bisect
import copy
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from regfs.layers.formats.entries import ROOT_ID, IndexEntry
from regfs.layers.formats.toc import TocChunk
from regfs.layers.index.meta import IndexKind, IndexMeta


class LaidOutIndex:
    """The facts and pieces of the index to be written at ``path``."""

    def __init__(
        self,
        path: Path,
        meta: IndexMeta,
        chunks: Sequence[TocChunk],
        span_starts: Iterable[tuple[int, int, bytes]] = (),
    ) -> None:
        """``chunks`` in stream order; ``span_starts``: (offset, bits, window) of each
        zTOC span, as ``write_index`` takes them."""
        self.path = path
        self.meta = meta
        self._chunks = chunks
        self._offsets = [chunk.virtual_offset for chunk in chunks]
        self._span_starts = {offset: (bits, window) for offset, bits, window in span_starts}
        self._entries: list[IndexEntry] = []
        self._by_name: dict[tuple[int, bytes], IndexEntry] = {}
        self._children: dict[int, list[IndexEntry]] = {}
        self._links: dict[int, list[IndexEntry]] = {}

    def with_entries(self, entries: Sequence[IndexEntry]) -> LaidOutIndex:
        """This layout with the tree's ``entries`` (in id order, the root first), looked
        up by id, by name and by directory (made here, in the indexing thread: a layer of
        100 000 names takes its time)."""
        laid_out = copy.copy(self)
        laid_out._entries = list(entries)
        laid_out._by_name = {(entry.parent, entry.name): entry for entry in entries}
        children: dict[int, list[IndexEntry]] = defaultdict(list)
        for entry in entries:
            children[entry.parent].append(entry)
        laid_out._children = {parent: sorted(listing, key=lambda entry: entry.name)
                              for parent, listing in children.items()}  # fmt: skip
        links: dict[int, list[IndexEntry]] = defaultdict(list)
        for entry in entries:
            if entry.link:
                links[entry.link].append(entry)
        laid_out._links = dict(links)
        return laid_out

    @property
    def has_entries(self) -> bool:
        return bool(self._entries)

    def entries(self) -> list[IndexEntry]:
        """Every entry, in id order (parents first)."""
        return list(self._entries)

    def entry(self, entry_id: int) -> IndexEntry:
        if not 0 < entry_id <= len(self._entries):
            raise KeyError(entry_id)
        return self._entries[entry_id - ROOT_ID]

    def child(self, parent: int, name: bytes) -> IndexEntry | None:
        return self._by_name.get((parent, name))

    def children(self, parent: int) -> list[IndexEntry]:
        """A directory's entries by name (bytes order, as SQLite's)."""
        return list(self._children.get(parent, ()))

    def names_of(self, inode_id: int) -> list[IndexEntry]:
        """Every name of a hard-linked inode (the first name and its links), by id."""
        first = [self.entry(inode_id)] if 0 < inode_id <= len(self._entries) else []
        return first + self._links.get(inode_id, [])

    def chunks(self) -> list[TocChunk]:
        """Every TOC chunk (or zTOC span), in stream order."""
        return list(self._chunks)

    def pieces(self) -> list[tuple[bytes, int]]:
        """As ``LayerIndex.pieces_in``: (sha256, what each takes of the blob)."""
        return [(chunk.sha256, chunk.compressed_end - chunk.compressed_offset)
                for chunk in self._chunks]  # fmt: skip

    def stored_pieces(self) -> dict[bytes, int]:
        """As ``LayerIndex.stored_pieces_in``: sha256 → bytes the chunk cache stores."""
        if self.meta.kind is IndexKind.TOC:
            return {chunk.sha256: chunk.size for chunk in self._chunks}
        return dict(self.pieces())

    def toc_chunk(self, position: int) -> TocChunk | None:
        """The chunk covering ``position`` of the stream, if any."""
        covering = self.toc_chunks_between(position, position + 1)
        return covering[0] if covering else None

    def toc_chunks_between(self, start: int, end: int) -> list[TocChunk]:
        """As ``LayerIndex.toc_chunks_between``: the chunk covering ``start``, then every
        chunk that begins before ``end``; none if no chunk covers ``start``."""
        first = bisect.bisect_right(self._offsets, start) - 1
        if first < 0 or start >= self._chunks[first].virtual_offset + self._chunks[first].size:
            return []
        return list(self._chunks[first : max(first + 1, bisect.bisect_left(self._offsets, end))])

    def span_start(self, virtual_offset: int) -> tuple[int, bytes]:
        """The bits and window that start the zTOC span at ``virtual_offset``."""
        return self._span_starts[virtual_offset]
