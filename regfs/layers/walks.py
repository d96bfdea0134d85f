"""Telling a program that reads a whole layer from one that reads a few of its files.

Layers layer, pure. A layer read lazily (eStargz, zstd:chunked, SOCI) costs a round trip
per file a reader misses, which is what a program starting up wants; a program going
through every file (``tar -c``, a scanner, ``grep -r``, a tree comparison) then waits one
round trip per file for thousands of files, where fetching the rest of the layer at once
costs less. Once ``WALK_FILES`` different files of a layer have been read, it is being
walked: ``LayerReads`` then fetches its rest behind the readers, as ``--background-fetch``
does from the first file. An application's start reads a few hundred files of its image
at most (Python's ``import json, sqlite3, email``: about 100), so it stays lazy.
"""

from __future__ import annotations

from collections.abc import Hashable

import cachetools

WALK_FILES = 512
"""Different files of one layer read before its rest is fetched."""
LAYERS_FOLLOWED = 256
"""Layers whose files read are counted at once (the least recently read are forgotten)."""


class Walks:
    def __init__(self, files: int = WALK_FILES) -> None:
        self._files = files
        self._read: cachetools.LRUCache[Hashable, set[int]] = cachetools.LRUCache(LAYERS_FOLLOWED)
        """Per layer not yet found walked: the files read, by where each starts."""
        self._walked: cachetools.LRUCache[Hashable, None] = cachetools.LRUCache(LAYERS_FOLLOWED)

    def read(self, layer: Hashable, file_start: int) -> bool:
        """A file of ``layer`` (starting at ``file_start`` of its stream) is read: True
        once, when this makes the layer walked."""
        if layer in self._walked:
            return False
        files = self._read.get(layer)
        if files is None:
            files = self._read[layer] = set()
        files.add(file_start)
        if len(files) < self._files:
            return False
        del self._read[layer]
        self._walked[layer] = None
        return True
