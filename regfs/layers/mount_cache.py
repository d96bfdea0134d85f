"""The cache dir as a mount opens it, before any layer is read.

Layers layer. What the tree's metadata (manifests, configs by digest; the last answers to
catalogs, tag lists and tags) and the layer store share: the chunk cache that bounds the
cache dir, the layer indexes in use (which its eviction leaves), the mount's background
work. Made apart from the layer store so that a mount's first requests to the registry
(a catalog, a tag) need only this and the registry client, not the layer readers, whose
imports (0.04-0.1 s, twice that from a cold disk) then go on while those requests travel.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from regfs.cache.answers import KeptAnswers
from regfs.cache.chunks import ChunkCache
from regfs.cache.confirmations import Confirmations
from regfs.cache.layout import CacheLayout
from regfs.cache.objects import KeptObjects
from regfs.cache.reachability import Reachability
from regfs.cache.temporaries import ready_for_layers
from regfs.layers.background import BackgroundWork
from regfs.layers.by_digest import ByDigest
from regfs.layers.open_indexes import OpenIndexes
from regfs.registry.client import RegistryClient


@dataclass(frozen=True, slots=True)
class MountCache:
    layout: CacheLayout
    chunks: ChunkCache
    """Every piece kept, and the bound on all of the cache dir (see ``regfs.cache.chunks``)."""
    indexes: OpenIndexes
    """The layer indexes in use and open: the chunk cache's eviction leaves their files."""
    by_digest: ByDigest
    """Manifests and configs by digest, kept in the cache dir."""
    answers: KeptAnswers
    """The last answers to mutable questions (catalogs, tag lists, tags, referrers)."""
    background: BackgroundWork
    """Work of the mount's own: read-ahead, prefetches, indexing ahead (the mount runs
    ``background.run``)."""


def open_mount_cache(client: RegistryClient, cache_dir: Path, cache_size: int) -> MountCache:
    """``cache_dir``, bounded by ``cache_size``, made ready for a mount's layers (what
    killed writers left there cleared). Blocking: a few small file system calls."""
    layout = CacheLayout(cache_dir)
    indexes = OpenIndexes()
    chunks = ChunkCache(layout, cache_size, in_use=indexes.paths)
    ready_for_layers(layout)
    confirmations = Confirmations(layout, chunks.count_written)
    reach = Reachability(patience=client.config.timeout / 2)
    by_digest = ByDigest(client, KeptObjects(chunks, confirmations), reach)
    answers = KeptAnswers(layout, chunks.count_written)
    return MountCache(layout, chunks, indexes, by_digest, answers, BackgroundWork())
