"""What every node of one mount shares.

Tree layer.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field

import cachetools

from regfs.cache.memory import listings_lru
from regfs.domain.platform import Platform
from regfs.layers.layer_store import LayerStore
from regfs.tree.metadata import RegistryMetadata
from regfs.tree.node import Node


@dataclass(frozen=True, slots=True)
class TreeContext:
    metadata: RegistryMetadata
    layers: LayerStore
    platform: Platform
    """The platform an index dir shows by default."""
    mount_time_ns: int
    """The mtime of entries that have none of their own."""
    aliases: frozenset[str] = frozenset()
    """Names from regfs's config file that stand for a registry below a path prefix."""
    status: Callable[[], Mapping[str, object]] = dict
    """What ``regfs status`` shows: the root's ``user.regfs.status`` (JSON)."""
    merged_listings: cachetools.LRUCache[
        tuple[Hashable, tuple[bytes, ...]], list[tuple[str, Node]]
    ] = field(default_factory=listings_lru)
    """Merged ``rootfs/`` listings by (image, path), of every image of the mount."""
