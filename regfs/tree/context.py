"""What every node of one mount shares.

Tree layer.
"""

from __future__ import annotations

from dataclasses import dataclass

from regfs.domain.platform import Platform
from regfs.layers.blobs import LayerStore
from regfs.tree.metadata import RegistryMetadata


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
