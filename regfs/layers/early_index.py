"""A TOC or zTOC layer's index answering from memory once its tree is made, while its
SQLite file is written behind.

Layers layer. Writing a layer's index takes its time (a Debian layer's: 45 ms) after its
tree is made, and a layer store's client (podman) looks into ``diff/`` right after
``info``. So a build from a TOC or zTOC runs as the mount's own work (``background.py``),
and those waiting for the index get it from the moment the builder tells the tree
(``index/laid_out.py``): a ``LayerIndex`` answering from memory. Once the file is written
the same object answers from it (``LayerIndex.written``) and the memory goes. A build
that fails before its tree is told fails for those waiting, as before; one that fails
after (the file not written) is a warning, and the mount goes on answering from memory
(the next mount builds again). A layer read whole is not built here: its first pass runs
in the request that needs it, whose deadline its local work must not cut.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from regfs.domain.errors import RegfsError, Unavailable
from regfs.layers.background import BackgroundWork
from regfs.layers.index.laid_out import LaidOutIndex
from regfs.layers.index.layer_index import LayerIndex, Listings
from regfs.layers.layer_ref import LayerRef
from regfs.layers.open_indexes import OpenIndexes
from regfs.registry.request_deadline import SharedProgress, leading, waiting_on, working

log = logging.getLogger(__name__)


class _Building:
    __slots__ = ("error", "index", "progress", "ready")

    def __init__(self) -> None:
        self.ready = trio.Event()
        self.index: LayerIndex | None = None
        """The index, once the tree is told or the file written; None when ready: the
        layer's TOC or zTOC could not be used (or failed, if ``error``)."""
        self.error: Exception | None = None
        self.progress = SharedProgress()


class EarlyIndexes:
    def __init__(
        self, background: BackgroundWork, indexes: OpenIndexes, listings: Listings
    ) -> None:
        self._background = background
        self._indexes = indexes
        self._listings = listings
        self._building: dict[LayerRef, _Building] = {}
        """Layers whose index is being built behind; what waits for it waits here."""

    async def build(
        self, layer: LayerRef, build: Callable[[], Awaitable[LayerIndex | None]]
    ) -> LayerIndex | None:
        """``build()``'s index (None: no TOC or zTOC could be used), or the index
        answering from its tree once the builder tells it, whichever comes first. Where no
        background work runs (``regfs prefetch``), ``build()`` itself. The build goes on
        if nobody waits any more."""
        if not self._background.running:
            return await build()
        building = self._building.get(layer)
        if building is None:
            building = self._building[layer] = _Building()
            self._background.start("indexing", layer, lambda: self._behind(layer, building, build))
        # bounded by the build's own deadlines (each Range request and registry call has
        # --timeout, its local work is bounded): not cut by the request's own, which
        # would cut a TOC's indexing in a worker thread
        with working(), waiting_on(building.progress):
            await building.ready.wait()
        if building.error is not None:
            raise building.error
        return building.index

    def tree_made(self, layer: LayerRef, laid_out: LaidOutIndex) -> None:
        """The builder of ``layer``'s index tells its tree (in the mount's loop): those
        waiting get an index answering from it."""
        building = self._building.get(layer)
        if building is not None and building.index is None:
            # another image's build of the same file may have told it first: one object
            building.index = self._indexes.get(laid_out.path) or LayerIndex.being_written(
                laid_out, self._listings
            )
            self._indexes.add(building.index)  # in use: its file is kept once written
            building.ready.set()

    async def _behind(
        self,
        layer: LayerRef,
        building: _Building,
        build: Callable[[], Awaitable[LayerIndex | None]],
    ) -> None:
        try:
            with leading(building.progress):
                written = await build()
        except (RegfsError, OSError) as error:
            if building.index is None:  # those waiting report it
                building.error = error
            else:
                log.warning("%s: its index could not be written (%s): this mount reads it "
                            "from memory", layer, error)  # fmt: skip
        except BaseException as error:  # a bug (logged by ``background.py``), or cancelled
            if building.index is None:
                cancelled = Unavailable(f"{layer}: indexing was cancelled")
                building.error = error if isinstance(error, Exception) else cancelled
            raise
        else:  # the file is written, opened as the index given out if there is one
            if building.index is None:
                building.index = written
            elif written is not None:
                building.index.written()
        finally:
            del self._building[layer]
            building.ready.set()
