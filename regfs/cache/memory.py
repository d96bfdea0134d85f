"""The in-memory LRUs of directory listings, and keeping values in any LRU safely.

Cache layer. A cachetools cache sized in bytes or entries raises ``ValueError`` for a
value larger than its whole bound (a directory of 200 000 names in an LRU of 131 072
entries): such a value is served to its caller and simply not kept.
"""

from __future__ import annotations

from typing import TypeVar

import cachetools

K = TypeVar("K")
V = TypeVar("V")

LISTED_ENTRIES_KEPT = 1 << 17
"""Entries of recent listings a mount keeps in each of its two listing LRUs (layer dirs,
merged ``rootfs/`` dirs), shared by all its images: a few hundred bytes an entry, so tens
of MiB each. Sized in entries, not directories, since a cyclic walk (`find`) over more
directories than an LRU holds would never hit; shared, so memory does not grow with the
number of images walked."""


def listings_lru(maxsize: int = LISTED_ENTRIES_KEPT) -> cachetools.LRUCache[K, list[V]]:
    """An LRU of listings, bounded by their total number of entries."""
    return cachetools.LRUCache(maxsize, getsizeof=lambda listing: len(listing) + 1)


def keep(cache: cachetools.Cache[K, V], key: K, value: V) -> None:
    """Store ``value`` under ``key`` unless it alone is larger than the cache's bound."""
    if cache.getsizeof(value) <= cache.maxsize:
        cache[key] = value
