"""The layer indexes a mount holds: which are in use (never evicted), which are open.

Layers layer. The chunk cache's eviction runs in worker threads and must leave every
index file a node of the tree may still use, or that is being built; the mount also
bounds how many SQLite connections it keeps open (``OPEN_INDEXES``): the least recently
used is closed, and opens again when next queried (``LayerIndex.on_open``).
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import cachetools

if TYPE_CHECKING:  # the indexes are made by the layer store: a mount's first requests to
    # the registry, which open the cache, need not import them (``mount_cache.py``)
    from regfs.layers.index.layer_index import LayerIndex

OPEN_INDEXES = 128
"""Layer indexes a mount keeps open (a file descriptor and up to 256 KiB of SQLite cache
each); the least recently used is closed and opens again when next queried."""


class OpenIndexes:
    def __init__(self) -> None:
        self._in_use: weakref.WeakValueDictionary[Path, LayerIndex] = weakref.WeakValueDictionary()
        """Every index a node of the tree may still use: their files are never evicted."""
        self._open = _ClosingLRU(OPEN_INDEXES)
        """The indexes whose SQLite connection is open: bounds the files the mount holds."""
        self._building: set[Path] = set()
        """Index files being built and not yet opened: not to be evicted in between either."""
        self._lock = threading.Lock()  # the eviction thread reads the two above

    def get(self, path: Path) -> LayerIndex | None:
        return self._in_use.get(path)

    def add(self, index: LayerIndex) -> None:
        """``index`` is in use: its file stays, and it counts among the open ones."""
        with self._lock:
            self._in_use[index.path] = index
        index.on_open = self.use
        self.use(index)

    def use(self, index: LayerIndex) -> None:
        """Count ``index`` as recently used among the open ones (closing the oldest)."""
        if index.is_open:
            self._open[index.path] = index

    @contextlib.contextmanager
    def building(self, *paths: Path) -> Iterator[None]:
        """Index files being built and opened are kept from the cache's eviction meanwhile
        (a small cache, full of other layers' blobs, would otherwise take them at once)."""
        with self._lock:
            self._building |= set(paths)
        try:
            yield
        finally:
            with self._lock:
                self._building -= set(paths)

    def paths(self) -> set[Path]:
        """Index files in use or being built: the chunk cache's eviction (in a worker
        thread) leaves them."""
        with self._lock:
            return {index.path for index in list(self._in_use.values())} | self._building

    def close(self) -> None:
        for index in list(self._in_use.values()):
            index.close()


class _ClosingLRU(cachetools.LRUCache[Path, "LayerIndex"]):
    """Open layer indexes, least recently used first: the one pushed out is closed (and
    opens again when next queried)."""

    def popitem(self) -> tuple[Path, LayerIndex]:
        path, index = super().popitem()
        index.close()
        return path, index
