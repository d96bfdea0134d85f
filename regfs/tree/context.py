"""What every node of one mount shares.

Tree layer.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import TYPE_CHECKING

import cachetools

from regfs.cache.memory import listings_lru
from regfs.domain.platform import Platform
from regfs.tree.node import Node

if TYPE_CHECKING:  # the registry client and the layer readers: made, not imported, here
    from regfs.layers.layer_store import LayerStore
    from regfs.tree.metadata import RegistryMetadata


class Services:
    """What every node beyond the root asks: the registry's metadata and the layers.

    ``layers`` may be given as a function that makes them: a mount's first requests to the
    registry (a catalog, a tag) then go out before the layer readers are imported.
    """

    def __init__(
        self, metadata: RegistryMetadata, layers: LayerStore | Callable[[], LayerStore]
    ) -> None:
        self.metadata = metadata
        self._make_layers = layers if callable(layers) else None
        self._layers = None if callable(layers) else layers

    @property
    def layers(self) -> LayerStore:
        """The layer store, made now if it was given as a function and is not made yet."""
        if self._layers is None:
            assert self._make_layers is not None
            self._layers = self._make_layers()
        return self._layers

    def close_layers(self) -> None:
        """Close the layer store's index files, if it was made."""
        if self._layers is not None:
            self._layers.close()


class TreeContext:
    """What every node of one mount shares.

    ``services`` may be given as a function that makes them: the mount then answers for
    its root before the registry client and the layer readers exist (importing them is
    most of a mount's start), and the first request beyond the root makes them.
    """

    def __init__(
        self,
        services: Services | Callable[[], Services],
        platform: Platform,
        mount_time_ns: int,
        aliases: frozenset[str] = frozenset(),
        status: Callable[[], Mapping[str, object]] = dict,
    ) -> None:
        self._services = services
        self.platform = platform
        """The platform an index dir shows by default."""
        self.mount_time_ns = mount_time_ns
        """The mtime of entries that have none of their own."""
        self.aliases = aliases
        """Names from regfs's config file that stand for a registry below a path prefix."""
        self.status = status
        """What ``regfs status`` shows: the root's ``user.regfs.status`` (JSON)."""
        self.merged_listings: cachetools.LRUCache[
            tuple[Hashable, tuple[bytes, ...]], list[tuple[str, Node]]
        ] = listings_lru()
        """Merged ``rootfs/`` listings by (where shown, path), of every image of the mount."""

    def services(self) -> Services:
        """The services, made now if they were given as a function and are not made yet."""
        if not isinstance(self._services, Services):
            self._services = self._services()
        return self._services

    @property
    def metadata(self) -> RegistryMetadata:
        return self.services().metadata

    @property
    def layers(self) -> LayerStore:
        return self.services().layers

    def known_hosts(self) -> Mapping[str, None]:
        """Hosts named so far (none before the services are made: nothing asked for one)."""
        if isinstance(self._services, Services):
            return self._services.metadata.known_hosts
        return {}
