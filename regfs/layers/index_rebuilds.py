"""Layer indexes built again after another process evicted them from under this mount.

Layers layer. Processes sharing a cache dir (two mounts, a mount and ``regfs prefetch``)
each evict least-recently-used files to keep it within its bound, and each knows only
which index files *it* uses. A mount closes indexes past ``OPEN_INDEXES``; while one is
closed, another process may evict its file, and its next query finds nothing to open
(``Evicted``). The tree's nodes hold that ``LayerIndex`` object, and the entry ids they
handed to the kernel are its own; so the file is built again at the same path, as a first
read builds it, and the object opens it again: a twin, built from the same verified
input alike (``LayerIndex._twin`` checks its seal).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from pathlib import Path

from regfs.domain.errors import Unavailable
from regfs.domain.manifest import Descriptor
from regfs.layers.builders import IndexBuilders
from regfs.layers.index.layer_index import LayerIndex
from regfs.layers.index.meta import IndexKind
from regfs.layers.layer_ref import LayerRef
from regfs.layers.open_indexes import OpenIndexes
from regfs.layers.shared_work import SharedWork

ZtocOf = Callable[[LayerRef], Awaitable[Descriptor | None]]


class IndexRebuilds:
    """Builds evicted index files again, each once however many requests meet it."""

    def __init__(self, builders: IndexBuilders, indexes: OpenIndexes, ztoc_of: ZtocOf) -> None:
        self._builders = builders
        self._indexes = indexes
        self._ztoc_of = ztoc_of
        self._flight: SharedWork[None] = SharedWork()

    def rebuild_for(self, layer: LayerRef, index: LayerIndex) -> Callable[[], Awaitable[None]]:
        """What builds ``index``'s file again (``LayerIndex.rebuild``). It holds the path
        and kind, not the index: a node dropping the index must let it go."""
        return functools.partial(self._rebuild, layer, index.path, index.meta.kind)

    async def _rebuild(self, layer: LayerRef, path: Path, kind: IndexKind) -> None:
        await self._flight.run(("rebuild", path), lambda: self._build(layer, path, kind))

    async def _build(self, layer: LayerRef, path: Path, kind: IndexKind) -> None:
        """Build the index of ``kind`` at ``path`` again, unless it is back already."""
        if path.exists():  # built meanwhile, here or by another process
            return
        with self._indexes.building(path):
            if kind is IndexKind.WHOLE:
                await self._builders.whole_once(layer)
            elif kind is IndexKind.TOC:
                await self._builders.from_toc(layer, path)
            elif (ztoc := await self._ztoc_of(layer)) is not None:
                await self._builders.from_ztoc(layer, ztoc, path)
        if not path.exists():  # the TOC or zTOC that made it is no longer usable
            raise Unavailable(f"{layer}: its index {path.name}, evicted by another process, "
                              "could not be built again as it was")  # fmt: skip
