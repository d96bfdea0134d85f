"""A mount's registry client and what uses it (metadata, layers), made once the mount is live.

Application layer (``commands/mount.py``). Importing httpx, the TLS stack and the layer
readers was most of what ``regfs mount`` spent before the mount answered; the root
answers without them, and they are made once, by a task of the mount begun when it is live
(``warm_up``) or by the first request beyond the root, whichever comes first. The layer
store comes after the client and metadata: a mount's first requests to the registry (a
catalog, a tag) need only those, and the layer readers' imports go on while they travel.
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from regfs.domain.errors import RegfsError
from regfs.registry.config import ClientConfig
from regfs.registry.credentials import DockerCredentials
from regfs.registry.request_deadline import working
from regfs.tree.context import Services

if TYPE_CHECKING:  # imported by ``_make``, when first needed
    from regfs.layers.layer_store import LayerStore
    from regfs.layers.mount_cache import MountCache
    from regfs.registry.client import RegistryClient

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Made:
    client: RegistryClient
    services: Services


class MountServices:
    """Makes the services on the first call (from a request, in the mount's trio loop)
    and starts the layer store's background work (prefetches, indexing ahead) in the
    mount's nursery."""

    def __init__(
        self, args: argparse.Namespace, config: ClientConfig, credentials: DockerCredentials
    ) -> None:
        self._args = args
        self._config = config
        self._credentials = credentials
        self._made: _Made | None = None
        self._nursery: trio.Nursery | None = None

    def serve_in(self, nursery: trio.Nursery) -> None:
        """The nursery the layer store's background work (prefetches) will run in."""
        self._nursery = nursery

    async def warm_up(self) -> None:
        """Make the services as soon as the mount is live, not at its first request beyond
        the root, which would wait for them; then freeze what the process holds so far out
        of the garbage collector's full passes, which an index build's hundred thousand
        objects set off (a layer store's first ``podman run`` waited for one: its TOC index
        took 0.26-0.38 s instead of 0.34-0.41). The slow part (imports, the trust store)
        runs in a worker thread, so the root goes on answering meanwhile; the registry
        client's first, then the layer readers', which a first request to the registry (a
        catalog, a tag) does not wait for. A failure is logged here and met again by the
        first request that needs them."""
        try:
            await trio.to_thread.run_sync(_prepare_client, self._config)
            services = self()
            await trio.to_thread.run_sync(importlib.import_module, "regfs.layers.layer_store")
            _ = services.layers
        except (OSError, RegfsError) as error:
            log.warning("could not prepare the registry client: %s (tried again when needed)",
                        error)  # fmt: skip
        gc.freeze()

    def __call__(self) -> Services:
        if self._made is None:
            with working():  # local work: the request's --timeout is for the registry
                self._made = self._make()
        return self._made.services

    def _make(self) -> _Made:
        # httpx and the TLS stack: ~0.05 s of imports, paid here (``warm_up`` began them)
        from regfs.layers.mount_cache import open_mount_cache
        from regfs.registry.client import RegistryClient
        from regfs.tree.last_answers import StalePolicy
        from regfs.tree.metadata import MetadataLimits, RegistryMetadata

        args = self._args
        client = RegistryClient(self._config, self._credentials)
        cache = open_mount_cache(client, args.cache_dir, args.cache_size)
        metadata = RegistryMetadata(
            client,
            MetadataLimits(ttl=args.metadata_ttl),
            cache.by_digest,
            cache.answers,
            stale=StalePolicy(allowed=args.stale, max_age=args.max_stale),
            verify_schema1_signatures=args.verify_schema1_signatures,
            background=cache.background,
        )
        assert self._nursery is not None, "requests are served only inside the mount's nursery"
        self._nursery.start_soon(cache.background.run)
        layers = functools.partial(self._layer_store, client, cache)
        return _Made(client, Services(metadata, layers))

    def _layer_store(self, client: RegistryClient, cache: MountCache) -> LayerStore:
        """The layer store, made by the first request that reads a layer (or ``warm_up``)."""
        # the layer readers: ~0.1 s of imports, paid here (``warm_up`` began them)
        from regfs.layers.layer_store import LayerStore

        args = self._args
        with working():
            return LayerStore(
                client, cache, soci_v1_referrers=args.soci_v1_referrers,
                background_fetch=args.background_fetch, read_record=args.record_reads,
            )  # fmt: skip

    @property
    def client(self) -> RegistryClient:
        self()
        assert self._made is not None
        return self._made.client

    @property
    def layers(self) -> LayerStore:
        return self().layers

    async def aclose_client(self) -> None:
        """Close the registry client's connections, if a request made it."""
        if self._made is not None:
            await self._made.client.aclose()

    def close_layers(self) -> None:
        """Close the layer store's index files, if a request made it."""
        if self._made is not None:
            self._made.services.close_layers()


def _prepare_client(config: ClientConfig) -> None:
    """What making the registry client and the metadata costs most, done in a worker
    thread: the imports of ``MountServices._make`` and the system trust store (loaded
    once, ~20 ms)."""
    for module in ("regfs.layers.mount_cache", "regfs.registry.client",
                   "regfs.tree.last_answers", "regfs.tree.metadata"):  # fmt: skip
        importlib.import_module(module)
    _ = config.tls.default
