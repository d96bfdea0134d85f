"""A layer's pieces as its TOC or zTOC lays them out, in memory, before its index is written.

Layers layer: pure, no IO. Writing a layer's index takes its time (a Debian layer's TOC:
its tree 50-80 ms, SQLite 45 ms) and the layer's size and pieces are known before it
starts: a ``LaidOutIndex`` answers what a reader of TOC chunks or zTOC spans asks of an
index (``readers.py``), so a fetch ahead (an eStargz prefetch) can begin at once. Its
answers are those the written index will give: both come from the same lists.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from pathlib import Path

from regfs.layers.formats.toc import TocChunk
from regfs.layers.index.meta import IndexMeta


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
